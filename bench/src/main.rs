//! The benchmark harness. For each scenario (Kafka, RabbitMQ, JetStream, Azure Storage queue,
//! http) it measures, in one run on this machine:
//!
//! - the ceiling of each hop alone, with the gateway's own client settings: publish with
//!   confirmations, consume with acknowledgements (no-op handler), and the echo function called
//!   directly 64 at a time, each the faster of two tries; and the CPU seconds per message each
//!   hop costs (this process plus the broker or the function);
//! - end to end: a backlog loaded first, then drained by switchyard through the echo function
//!   into the output, and the same by the peer (`mq-bridge-app`) and by a hand-written bridge in
//!   this process (the same clients, none of the gateway's features);
//! - latency: an open-loop producer at 50% and 80% of switchyard's measured maximum, the time
//!   from publish to the output, through switchyard, the peer and the hand-written bridge, all
//!   running at once on queues of their own, each step taken in slices with the runners in turn;
//!   and through switchyard once more (`switchyard again`, the same gateway as a second
//!   process), whose distance from switchyard is how finely this machine resolves a latency
//!   difference (the added-p99 target is judged only where it resolves 2 ms), and through the
//!   hand-written bridge as a process of its own (this binary's `bridge` mode), the baseline
//!   of the added latency.
//!
//! It writes `bench/results/<date>.md` and `<date>.svg`. Knobs (environment): `BENCH_SCENARIOS`
//! (comma list: kafka,rabbitmq,jetstream,azure,http), `BENCH_MESSAGES` (backlog size, default
//! 200000; Azure uses `BENCH_AZURE_MESSAGES`, default 2000), `BENCH_LATENCY_SECS` (default 10),
//! `BENCH_LATENCY_SLICES` (the slices each step is taken in, default 5),
//! `BENCH_LATENCY_SHARES` (the latency steps' loads, default `0.5,0.8`), `BENCH_GATEWAY` (the
//! switchyard binary), `BENCH_GATEWAY_B` (a second switchyard binary, run as one more runner
//! in the same rounds; the report gives its ratios to the first round by round),
//! `BENCH_PEER` (the mq-bridge-app binary; unset: no peer), `BENCH_OUT`
//! (results folder), `BENCH_KEEP` (set: keep the processes' logs),
//! `BENCH_GATEWAY_LOG` (the gateway's `RUST_LOG`, default `warn`), `BENCH_GATEWAY_THREADS` (the
//! gateway's runtime worker threads; default: one per core), `BENCH_ROUNDS` (end-to-end drains
//! per runner, in turn and in a rotating order; the report gives each runner's median round and
//! lists every round; default 3), `BENCH_INSTRUCTIONS` (set: instead of the timed benchmark,
//! count each runner's instructions per message under callgrind, `BENCH_INSTRUCTIONS_MESSAGES`
//! of them, default 5000; see [`instructions`]), `BENCH_MAX_IN_FLIGHT` (the events switchyard
//! holds, default the window of 64; its calls stay 64; `default`: the gateway's own default),
//! `BENCH_MAX_IN_FLIGHT_B` (the same for switchyard B, default as the first),
//! `BENCH_CONTENT_TYPE` and `BENCH_CONTENT_TYPE_B` (the `content_type` switchyard's broker
//! triggers give messages that carry none; default unset: each body is checked for JSON),
//! `BENCH_OUTPUT_ATTRIBUTES` and `BENCH_OUTPUT_ATTRIBUTES_B` (`false`: switchyard's broker
//! outputs write the reply without the CloudEvents attributes; default unset: with them).

mod brokers;
mod instructions;
mod procs;
mod report;

use brokers::{Broker, Kind, Msg, Publisher};
use futures::stream::{BoxStream, FuturesUnordered};
use futures::StreamExt;
use procs::{cpu_of, free_port, mem_mib, own_cpu_seconds, pid_on_port, wait_port, Proc};
use report::{
    Latency, Row, Scenario, CONTROL, PEER, RAW, RAW_PROCESS, RUNNERS, SWITCHYARD, SWITCHYARD_B,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Every scenario, in the order a run takes them (`BENCH_SCENARIOS` picks some).
const SCENARIOS: &str = "kafka,rabbitmq,jetstream,azure,http";

/// In-flight calls to the function, for switchyard, the peer and the hand-written bridge alike.
const WINDOW: usize = 64;
/// The payload: 1 KiB of JSON whose first field is the time it was published.
const PAYLOAD: usize = 1024;

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64
}

/// A 1 KiB order event whose first fields are its publish time and `i`, as compressible as
/// real JSON events are (keys and words repeat, ids and amounts do not; lz4 takes a thousand of
/// them to about 40%). It used to be padding of one repeated letter, which lz4 shrinks a
/// hundredfold and so flattered every runner that compresses. The rest of the event is one of
/// `TAILS` made once, so building a payload on a measured path costs a copy, not a formatting.
fn payload(i: usize) -> Vec<u8> {
    // Nanoseconds since 1970 have 19 digits (until 2286), so the time sits at bytes 5..24.
    let mut body = format!("{{\"t\":{},\"n\":{i},", now_ns()).into_bytes();
    let tail = &tails()[i % TAILS];
    // Every tail ends in a note longer than any head leaves room for: the cut falls in it.
    body.extend_from_slice(&tail[..PAYLOAD - 2 - body.len()]);
    body.extend_from_slice(b"\"}");
    body
}

/// Distinct event bodies `payload` cycles through (4 MiB; lz4's window is 64 KiB).
const TAILS: usize = 4096;

/// The bodies after the head: an order id, a customer, line items, then a note of words and
/// letters at least `PAYLOAD` long, without its closing quote.
fn tails() -> &'static [Vec<u8>] {
    static TAILS_MADE: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    TAILS_MADE.get_or_init(|| (0..TAILS as u64).map(tail).collect())
}

fn tail(k: u64) -> Vec<u8> {
    use std::fmt::Write;
    const WORDS: [&str; 24] = [
        "express",
        "standard",
        "gift",
        "fragile",
        "north",
        "south",
        "east",
        "west",
        "warehouse",
        "return",
        "priority",
        "bulk",
        "sample",
        "retail",
        "online",
        "store",
        "pickup",
        "locker",
        "weekday",
        "evening",
        "signed",
        "tracked",
        "insured",
        "economy",
    ];
    let mut seed = k.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ now_ns();
    let mut next = move || {
        // splitmix64
        seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut body = String::with_capacity(PAYLOAD + 64);
    let _ = write!(
        body,
        "\"order\":\"{:016x}\",\"customer\":\"c-{:06}\",\"items\":[",
        next(),
        next() % 1_000_000
    );
    let mut first = true;
    // A head is at most 50 bytes: the items end before the shortest cut, in the note.
    while body.len() < PAYLOAD - 210 {
        let r = next();
        let _ = write!(
            body,
            "{}{{\"sku\":\"{:08x}\",\"qty\":{},\"price\":{}.{:02},\"tag\":\"{}\"}}",
            if first { "" } else { "," },
            r as u32,
            (r >> 32) % 9 + 1,
            (r >> 36) % 500,
            (r >> 48) % 100,
            WORDS[((r >> 56) % 24) as usize],
        );
        first = false;
    }
    body.push_str("],\"note\":\"");
    while body.len() < PAYLOAD - 40 {
        body.push_str(WORDS[(next() % 24) as usize]);
        body.push(' ');
    }
    // Letters that do not repeat, to the end.
    while body.len() < PAYLOAD {
        body.push((b'a' + (next() % 26) as u8) as char);
    }
    body.into_bytes()
}

/// Microseconds since the body was published (it carries its publish time).
fn age_us(body: &[u8]) -> Option<u64> {
    let t: u64 = std::str::from_utf8(body.get(5..24)?).ok()?.parse().ok()?;
    Some(now_ns().saturating_sub(t) / 1000)
}

fn unique(prefix: &str) -> String {
    format!(
        "bench{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// Everything a scenario needs: the echo function, the binaries, a scratch folder.
struct Bench {
    echo: Proc,
    echo_url: String,
    gateway: PathBuf,
    /// A second switchyard build to compare with the first (`BENCH_GATEWAY_B`).
    gateway_b: Option<PathBuf>,
    peer: Option<PathBuf>,
    dir: PathBuf,
    client: reqwest::Client,
    messages: usize,
    latency_secs: f64,
    /// Each latency step is taken in this many slices of `latency_secs` ÷ slices, the runners
    /// in turn.
    latency_slices: usize,
    /// The loads of the latency steps, as shares of switchyard's measured maximum.
    latency_shares: Vec<f64>,
    rounds: usize,
}

impl Bench {
    fn echo_pid(&self) -> u32 {
        self.echo.pid()
    }

    /// The runners of a scenario: `RUNNERS`, with `SWITCHYARD_B` after switchyard when set.
    fn runners(&self) -> Vec<&'static str> {
        let mut r = RUNNERS.to_vec();
        if self.gateway_b.is_some() {
            r.insert(1, SWITCHYARD_B);
        }
        r
    }

    /// The binary of a switchyard runner (`SWITCHYARD` and its `CONTROL`, or `SWITCHYARD_B`
    /// when set).
    fn gateway_of(&self, runner: &str) -> Option<&Path> {
        match runner {
            SWITCHYARD | CONTROL => Some(&self.gateway),
            SWITCHYARD_B => self.gateway_b.as_deref(),
            _ => None,
        }
    }

    /// Start switchyard (`runner`: either build) on `pipeline` (trigger and outputs); waits
    /// for /readyz.
    async fn start_gateway(&self, runner: &str, pipeline: &str, ingress: Option<u16>) -> Proc {
        self.start_gateway_in(runner, pipeline, ingress, &[]).await
    }

    /// [`Bench::start_gateway`] with the binary run by the command `wrapper` (e.g. valgrind's
    /// callgrind, for [`instructions`]); empty: run as it is.
    async fn start_gateway_in(
        &self,
        runner: &str,
        pipeline: &str,
        ingress: Option<u16>,
        wrapper: &[String],
    ) -> Proc {
        let bin = self.gateway_of(runner).expect("a switchyard runner");
        let admin = free_port();
        let ingress = ingress
            .map(|p| format!("ingress: {{ listen: \"127.0.0.1:{p}\" }}\n"))
            .unwrap_or_default();
        let held = held_line(runner);
        let pipeline = runner_settings(runner, pipeline);
        let yaml = gateway_config(admin, &ingress, &self.echo_url, &held, &pipeline);
        let cfg = self.dir.join(format!("switchyard-{admin}.yaml"));
        std::fs::write(&cfg, yaml).expect("write config");
        let mut cmd = wrapped(wrapper, bin);
        cmd.args(["run", "-c"]).arg(&cfg).env(
            "RUST_LOG",
            std::env::var("BENCH_GATEWAY_LOG").unwrap_or_else(|_| "warn".into()),
        );
        if let Some(n) = std::env::var("BENCH_GATEWAY_THREADS")
            .ok()
            .filter(|n| !n.is_empty())
        {
            // The gateway's runtime only (TOKIO_WORKER_THREADS would also change this harness).
            cmd.env("TOKIO_WORKER_THREADS", n);
        }
        let mut p = Proc::spawn(
            "switchyard",
            &mut cmd,
            &self.dir.join(format!("switchyard-{admin}.log")),
        );
        let url = format!("http://127.0.0.1:{admin}/readyz");
        // Under callgrind a start takes some fifty times as long.
        let deadline =
            Instant::now() + Duration::from_secs(if wrapper.is_empty() { 60 } else { 600 });
        loop {
            p.alive();
            if let Ok(r) = self.client.get(&url).send().await {
                if r.status().is_success() {
                    return p;
                }
            }
            assert!(Instant::now() < deadline, "switchyard never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Start the peer on one route from `input` through the echo function to `output`.
    async fn start_peer(&self, input: &str, output: &str) -> Option<Proc> {
        self.start_peer_in(input, output, &[]).await
    }

    /// [`Bench::start_peer`] run by the command `wrapper` (empty: as it is).
    async fn start_peer_in(&self, input: &str, output: &str, wrapper: &[String]) -> Option<Proc> {
        let bin = self.peer.as_ref()?;
        // The same in-flight window: 4 concurrent batches of 16, each request of a batch at once.
        let yaml = format!(
            "log_level: warn\nroutes:\n  bench:\n    concurrency: 4\n    batch_size: {}\n    input: {input}\n    output:\n      request:\n        to: {{ http: {{ url: \"{}\", batch_concurrency: {} }} }}\n        forward_to: {output}\n",
            WINDOW / 4,
            self.echo_url,
            WINDOW / 4
        );
        let port = free_port();
        let cfg = self.dir.join(format!("peer-{port}.yaml"));
        std::fs::write(&cfg, yaml).expect("write peer config");
        let mut cmd = wrapped(wrapper, bin);
        cmd.arg("--config")
            .arg(&cfg)
            .args(["--no-ui", "--no-metrics", "--color", "never"]);
        Some(Proc::spawn(
            "mq-bridge-app",
            &mut cmd,
            &self.dir.join(format!("peer-{port}.log")),
        ))
    }

    async fn served(&self) -> u64 {
        self.client
            .get(&self.echo_url)
            .send()
            .await
            .expect("echo count")
            .text()
            .await
            .expect("echo count body")
            .parse()
            .expect("a number")
    }
}

/// The `max_in_flight` line of a switchyard runner's pipeline. The same window as the bridge and
/// the peer by default: `WINDOW` calls and `WINDOW` events held (set, so a change of the
/// gateway's default does not move it). `BENCH_MAX_IN_FLIGHT` (switchyard B:
/// `BENCH_MAX_IN_FLIGHT_B`, else the same) holds another number (an experiment: the calls stay
/// `WINDOW`), or with `default` sets none, so the gateway's own default applies.
fn held_line(runner: &str) -> String {
    let held = runner_var(runner, "BENCH_MAX_IN_FLIGHT");
    match held.as_deref() {
        Some("default") => String::new(),
        Some(n) => {
            let n: usize = n
                .parse()
                .expect("BENCH_MAX_IN_FLIGHT: a number or `default`");
            format!("    max_in_flight: {n}\n")
        }
        None => format!("    max_in_flight: {WINDOW}\n"),
    }
}

/// A knob of switchyard's (`name`, or `name_B` for switchyard B, which falls back to `name`).
fn runner_var(runner: &str, name: &str) -> Option<String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match runner {
        SWITCHYARD_B => var(&format!("{name}_B")).or_else(|| var(name)),
        _ => var(name),
    }
}

/// The pipeline with the runner's settings of the broker routes (the http route has neither
/// key and is left as it is):
/// - `BENCH_CONTENT_TYPE`: the `content_type` the trigger gives messages that carry none, so
///   the gateway does not check whether each body is JSON. Unset (the default): every body is
///   checked, as by a trigger configured without one.
/// - `BENCH_OUTPUT_ATTRIBUTES=false`: the output writes the reply with its content type alone,
///   without the event's CloudEvents attributes as headers (as the peer writes it). Unset:
///   with them, the output's default. An Azure queue output has no such key (its message is
///   its body alone) and is left as it is.
fn runner_settings(runner: &str, pipeline: &str) -> String {
    let attributes = runner_var(runner, "BENCH_OUTPUT_ATTRIBUTES").map(|a| {
        a.parse::<bool>()
            .expect("BENCH_OUTPUT_ATTRIBUTES: true or false")
    });
    with_settings(
        pipeline,
        runner_var(runner, "BENCH_CONTENT_TYPE").as_deref(),
        attributes,
    )
}

/// [`runner_settings`] with the values given.
fn with_settings(pipeline: &str, content_type: Option<&str>, attributes: Option<bool>) -> String {
    if pipeline.contains("trigger: { type: http") {
        return pipeline.to_string();
    }
    let mut pipeline = pipeline.to_string();
    if let Some(ct) = content_type {
        pipeline = pipeline.replacen(
            "    trigger: { ",
            &format!("    trigger: {{ content_type: \"{ct}\", "),
            1,
        );
    }
    if let Some(attributes) = attributes {
        if !pipeline.contains("name: out, type: azure_queue") {
            pipeline = pipeline.replace(
                "      - { name: out, ",
                &format!("      - {{ name: out, attributes: {attributes}, "),
            );
        }
    }
    pipeline
}

/// The http scenario's pipeline: request → function → reply.
const HTTP_PIPELINE: &str =
    "    trigger: { type: http, path: /in, response: sync }\n    outputs: []\n";

/// A switchyard runner's whole config file: its admin port, the ingress line (empty without
/// one), the echo function and the one pipeline, `bench`.
fn gateway_config(admin: u16, ingress: &str, echo_url: &str, held: &str, pipeline: &str) -> String {
    format!(
        "admin: {{ listen: \"127.0.0.1:{admin}\" }}\n{ingress}functions:\n  echo: {{ url: \"{echo_url}\", concurrency: {WINDOW} }}\npipelines:\n  bench:\n    function: echo\n{held}{pipeline}"
    )
}

/// A command that runs `bin` under `wrapper` (its first word the program, then its arguments),
/// or `bin` itself when `wrapper` is empty.
fn wrapped(wrapper: &[String], bin: &Path) -> Command {
    match wrapper.split_first() {
        Some((program, args)) => {
            let mut cmd = Command::new(program);
            cmd.args(args).arg(bin);
            cmd
        }
        None => Command::new(bin),
    }
}

/// Publish `n` messages, at `rate` per second when given (open loop), with at most `window`
/// confirmations outstanding; the seconds it took.
async fn publish(p: &Publisher, n: usize, window: usize, rate: Option<f64>) -> f64 {
    let started = Instant::now();
    let mut pending = FuturesUnordered::new();
    for i in 0..n {
        if let Some(rate) = rate {
            let due = Duration::from_secs_f64(i as f64 / rate);
            let elapsed = started.elapsed();
            if due > elapsed {
                // Confirmations keep arriving while the producer waits for its next slot.
                let _ = tokio::time::timeout(due - elapsed, async {
                    while pending.next().await.is_some() {}
                    std::future::pending::<()>().await
                })
                .await;
            }
        }
        while pending.len() >= window {
            pending.next().await;
        }
        pending.push(p.send(payload(i)).await);
    }
    while pending.next().await.is_some() {}
    started.elapsed().as_secs_f64()
}

/// Take `n` messages from `stream`, acknowledging each (64 acknowledgements at once at most);
/// the seconds from the first to the last, and each message's age when it arrived.
async fn consume(stream: &mut BoxStream<'static, Msg>, n: usize) -> (f64, Vec<u64>) {
    let mut first = None;
    let mut ages = Vec::with_capacity(n);
    let mut acks = FuturesUnordered::new();
    while ages.len() < n {
        let m = match tokio::time::timeout(Duration::from_secs(120), stream.next()).await {
            Ok(Some(m)) => m,
            _ => panic!("only {} of {n} messages arrived", ages.len()),
        };
        first.get_or_insert_with(Instant::now);
        ages.push(age_us(&m.body).unwrap_or(0));
        acks.push(m.ack);
        while acks.len() >= WINDOW {
            acks.next().await;
        }
    }
    while acks.next().await.is_some() {}
    (
        first.map(|f| f.elapsed().as_secs_f64()).unwrap_or(0.0),
        ages,
    )
}

/// The hand-written bridge: consume, call the function, publish the reply with confirmation,
/// acknowledge; `WINDOW` at once. Runs until aborted.
async fn raw_bridge(
    broker: &Broker,
    client: reqwest::Client,
    url: String,
    input: &str,
    output: &str,
) -> tokio::task::JoinHandle<()> {
    let stream = broker.consume(input).await;
    let publisher = broker.publisher(output).await;
    tokio::spawn(async move {
        let publisher = &publisher;
        stream
            .for_each_concurrent(WINDOW, |m| {
                let (client, url) = (client.clone(), url.clone());
                async move {
                    let reply = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(m.body)
                        .send()
                        .await
                        .expect("call the function")
                        .bytes()
                        .await
                        .expect("the function's reply");
                    publisher.send(reply.to_vec()).await.await;
                    m.ack.await;
                }
            })
            .await;
    })
}

/// The runners of a broker scenario's latency steps: its end-to-end `runners`, with
/// switchyard's control (`CONTROL`, the same gateway once more) after switchyard and the
/// hand-written bridge as a process of its own (`RAW_PROCESS`) after the bridge.
fn latency_runners(runners: &[&'static str]) -> Vec<&'static str> {
    let mut r = Vec::new();
    for &runner in runners {
        r.push(runner);
        match runner {
            SWITCHYARD => r.push(CONTROL),
            RAW => r.push(RAW_PROCESS),
            _ => {}
        }
    }
    r
}

/// Switchyard, the peer or the hand-written bridge (`RAW_PROCESS`) as a process, or the
/// hand-written bridge as a task of this process (aborted when dropped), moving messages from
/// one queue to another.
enum Running {
    Process(Proc),
    Task(tokio::task::JoinHandle<()>),
}

impl Running {
    fn pid(&self) -> u32 {
        match self {
            Running::Process(p) => p.pid(),
            Running::Task(_) => std::process::id(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Running::Task(t) = self {
            t.abort();
        }
    }
}

/// Start `runner` (one of `RUNNERS`) on the route from `input` to `output`; `Err` says why it
/// cannot run here.
async fn start_runner(
    b: &Bench,
    broker: &Broker,
    runner: &str,
    input: &str,
    output: &str,
) -> Result<Running, &'static str> {
    match runner {
        RAW => Ok(Running::Task(
            raw_bridge(broker, b.client.clone(), b.echo_url.clone(), input, output).await,
        )),
        RAW_PROCESS => {
            let mut cmd = Command::new(std::env::current_exe().expect("own path"));
            cmd.args(["bridge", broker.kind.name(), input, output, &b.echo_url]);
            let log = b.dir.join(format!("{}.log", unique("bridge")));
            Ok(Running::Process(Proc::spawn("bridge", &mut cmd, &log)))
        }
        _ => Ok(Running::Process(
            start_process(b, broker, runner, input, output, &[]).await?,
        )),
    }
}

/// Start switchyard (either build) or the peer as a process on the route from `input` to
/// `output`, run by `wrapper` (empty: as it is); `Err` says why it cannot run here.
async fn start_process(
    b: &Bench,
    broker: &Broker,
    runner: &str,
    input: &str,
    output: &str,
    wrapper: &[String],
) -> Result<Proc, &'static str> {
    match runner {
        SWITCHYARD | SWITCHYARD_B | CONTROL => {
            b.gateway_of(runner).ok_or("BENCH_GATEWAY_B is unset.")?;
            let pipeline = broker.kind.gateway_pipeline(input, output);
            Ok(b.start_gateway_in(runner, &pipeline, None, wrapper).await)
        }
        _ => {
            let (pin, pout) = broker
                .peer_endpoints(input, output)
                .ok_or("The peer has no Azure Storage queue connector; not compared.")?;
            b.start_peer_in(&pin, &pout, wrapper)
                .await
                .ok_or("The peer was not run (BENCH_PEER unset).")
        }
    }
}

/// Wait until `output` holds `n` messages; the rate from the first one seen to the last, CPU
/// seconds per message of `pid` and of every process in `all`, and `pid`'s memory.
async fn drain(broker: &Broker, output: &str, n: usize, pid: u32, all: &[u32]) -> Row {
    let deadline = Instant::now() + Duration::from_secs(1800);
    let mut start: Option<(Instant, usize, f64, f64)> = None;
    let mut rss_max: f64 = 0.0;
    loop {
        let c = broker.count(output).await;
        rss_max = rss_max.max(mem_mib(pid, "VmRSS:"));
        if c > 0 && start.is_none() {
            start = Some((Instant::now(), c, cpu_of(&[pid]), cpu_of(all)));
        }
        if c >= n {
            let (t0, c0, cpu0, all0) = start.expect("started");
            let done = (n - c0).max(1) as f64;
            let secs = t0.elapsed().as_secs_f64().max(1e-3);
            return Row {
                rate: done / secs,
                cpu_us: (cpu_of(&[pid]) - cpu0) / done * 1e6,
                cpu_all_us: (cpu_of(all) - all0) / done * 1e6,
                rss_peak: mem_mib(pid, "VmHWM:"),
                rss_end: mem_mib(pid, "VmRSS:"),
                rss_max,
                ..Row::default()
            };
        }
        assert!(
            Instant::now() < deadline,
            "{output}: {c} of {n} after 30 min"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Time `f` and the CPU seconds it cost this process and `others`.
async fn measured<F: std::future::Future<Output = f64>>(n: usize, others: &[u32], f: F) -> Row {
    let (own0, others0) = (own_cpu_seconds(), cpu_of(others));
    let secs = f.await;
    let cpu = own_cpu_seconds() - own0 + cpu_of(others) - others0;
    Row {
        rate: n as f64 / secs,
        cpu_all_us: cpu / n as f64 * 1e6,
        ..Row::default()
    }
}

/// The function called directly, `WINDOW` at once, `n` times; the seconds it took.
async fn call_function(b: &Bench, url: &str, n: usize) -> f64 {
    let started = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let req = b
                .client
                .post(url)
                .header("content-type", "application/json")
                .body(payload(i));
            async move {
                let r = req.send().await.expect("call");
                assert!(r.status().is_success(), "status {}", r.status());
                r.bytes().await.expect("reply");
            }
        })
        .buffer_unordered(WINDOW)
        .collect::<Vec<_>>()
        .await;
    started.elapsed().as_secs_f64()
}

/// Open loop against an HTTP endpoint: `rate` requests per second for `secs`; each latency in µs.
/// Connections the open-loop http load keeps at most: enough for any backlog the runners
/// build at 50% and 80% load, few enough that the loader never runs out of local ports.
const OPEN_LOOP_CONNECTIONS: usize = 256;

/// Send `rate` requests per second for `secs` to `url`; the microseconds from each request's
/// scheduled time to its answer. At most [`OPEN_LOOP_CONNECTIONS`] are in flight, all on kept
/// connections; a request that waits for one still counts from its scheduled time, so a
/// runner that falls behind shows it in its percentiles (no coordinated omission).
async fn open_loop_http(url: &str, rate: f64, secs: f64) -> Vec<u64> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(OPEN_LOOP_CONNECTIONS)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .build()
        .expect("http client");
    let slots = Arc::new(tokio::sync::Semaphore::new(OPEN_LOOP_CONNECTIONS));
    let n = (rate * secs) as usize;
    let started = Instant::now();
    let mut calls = FuturesUnordered::new();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let due = Duration::from_secs_f64(i as f64 / rate);
        while started.elapsed() < due {
            tokio::select! {
                _ = tokio::time::sleep(due.saturating_sub(started.elapsed())) => {}
                Some(us) = calls.next(), if !calls.is_empty() => out.push(us),
            }
        }
        let req = client
            .post(url)
            .header("content-type", "application/json")
            .body(payload(i));
        let slots = slots.clone();
        let scheduled = started + due;
        calls.push(async move {
            let _slot = slots.acquire_owned().await.expect("semaphore open");
            // A failed request counts as the slowest possible answer (it shows in p99), not as
            // a crash of the run.
            let ok = match req.send().await {
                Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                Err(_) => false,
            };
            if ok {
                scheduled.elapsed().as_micros() as u64
            } else {
                u64::MAX / 1000
            }
        });
    }
    while let Some(us) = calls.next().await {
        out.push(us);
    }
    out
}

/// `BENCH_LATENCY_SHARES`: the loads of the latency steps, comma-separated shares of the
/// measured maximum (default `0.5,0.8`; the report's targets read the 0.5 step).
fn latency_shares() -> Vec<f64> {
    let Ok(v) = std::env::var("BENCH_LATENCY_SHARES") else {
        return vec![0.5, 0.8];
    };
    v.split(',')
        .map(|x| {
            let share: f64 = x.trim().parse().unwrap_or_else(|_| {
                panic!("BENCH_LATENCY_SHARES: {x:?} is not a number (e.g. 0.1,0.5,0.8)")
            });
            assert!(
                share > 0.0 && share <= 1.0,
                "BENCH_LATENCY_SHARES: {share} is not in (0, 1]"
            );
            share
        })
        .collect()
}

/// `items` starting at the `round`th: each runner goes first in its turn, so none is always
/// the one that meets a broker still busy with the previous drain.
fn rotated<T>(items: &[T], round: usize) -> impl Iterator<Item = &T> {
    let k = round % items.len().max(1);
    items[k..].iter().chain(&items[..k])
}

/// The end-to-end rows of every round, per runner.
#[derive(Default)]
struct Rounds {
    rows: Vec<(String, Vec<Row>)>,
    failed: Vec<String>,
}

impl Rounds {
    /// Keep (and print) `runner`'s row of `round` (counted from 0).
    fn add(&mut self, runner: &str, round: usize, row: Row) {
        println!(
            "{runner}: {:.0}/s, {:.1} µs CPU/msg, {} calls (round {})",
            row.rate,
            row.cpu_us,
            row.calls,
            round + 1
        );
        match self.rows.iter_mut().find(|(n, _)| n == runner) {
            Some((_, rows)) => rows.push(row),
            None => self.rows.push((runner.to_string(), vec![row])),
        }
    }

    /// A runner that could not start is not tried again (its note is written once).
    fn fail(&mut self, runner: &str) {
        self.failed.push(runner.to_string());
    }

    fn failed(&self, runner: &str) -> bool {
        self.failed.iter().any(|n| n == runner)
    }

    /// Each runner's median round (by rate), in `order`; with more than one round, a note
    /// lists every round's rate. A runner counts as complete only if every round was.
    fn record(self, s: &mut Scenario, order: &[&str]) {
        let mut listed = Vec::new();
        for name in order {
            let Some((_, rows)) = self.rows.iter().find(|(n, _)| n == name) else {
                continue;
            };
            let mut row = median(rows);
            row.ok = rows.iter().all(|r| r.ok);
            row.calls = rows.iter().map(|r| r.calls).min().unwrap_or(0);
            if rows.len() > 1 {
                let rates: Vec<String> = rows.iter().map(|r| format!("{:.0}", r.rate)).collect();
                listed.push(format!("{name} {}", rates.join(" / ")));
            }
            s.run(name, row);
        }
        if !listed.is_empty() {
            s.note(&format!(
                "End to end: {} rounds, runners in a rotating order; each row is the runner's \
                 median round. Every round's msg/s: {}.",
                self.rows.iter().map(|(_, r)| r.len()).max().unwrap_or(0),
                listed.join("; ")
            ));
        }
        if let Some(pairs) = self.paired(SWITCHYARD_B, SWITCHYARD) {
            s.note(&format!(
                "{SWITCHYARD_B} ÷ {SWITCHYARD}, round by round (the two ran one after the \
                 other in each round, so the machine's drift mostly cancels): msg/s {}; gateway CPU \
                 per message {}.",
                pairs
                    .iter()
                    .map(|(r, _)| format!("{r:.2}"))
                    .collect::<Vec<_>>()
                    .join(" / "),
                pairs
                    .iter()
                    .map(|(_, c)| format!("{c:.2}"))
                    .collect::<Vec<_>>()
                    .join(" / "),
            ));
        }
    }

    /// `a`'s rate and CPU per message over `b`'s, round by round, when both ran every round.
    fn paired(&self, a: &str, b: &str) -> Option<Vec<(f64, f64)>> {
        let rows = |name: &str| self.rows.iter().find(|(n, _)| n == name).map(|(_, r)| r);
        let (ra, rb) = (rows(a)?, rows(b)?);
        (ra.len() == rb.len()).then(|| {
            ra.iter()
                .zip(rb)
                .map(|(x, y)| (x.rate / y.rate, x.cpu_us / y.cpu_us))
                .collect()
        })
    }
}

/// The row of the median rate (the lower middle of an even count).
fn median(rows: &[Row]) -> Row {
    let mut sorted: Vec<&Row> = rows.iter().collect();
    sorted.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    sorted[(sorted.len() - 1) / 2].clone()
}

/// How many times each hop ceiling is measured. The faster try is kept: one try can be caught
/// by a stall that says nothing about the hop's ceiling (once, a JetStream consume that waited
/// out a pull request's expiry measured a tenth of its usual rate).
const HOP_TRIES: usize = 2;

/// The faster of the best row so far and `row`.
fn faster(best: Option<Row>, row: Row) -> Option<Row> {
    match best {
        Some(b) if b.rate >= row.rate => Some(b),
        _ => Some(row),
    }
}

/// The echo function called directly, `n` calls `WINDOW` at once: the faster of `HOP_TRIES`.
async fn function_hop(b: &Bench, n: usize) -> Row {
    let mut best = None;
    for _ in 0..HOP_TRIES {
        let row = measured(n, &[b.echo_pid()], call_function(b, &b.echo_url, n)).await;
        println!("function direct: {:.0}/s", row.rate);
        best = faster(best, row);
    }
    best.expect("tried")
}

/// One broker scenario.
async fn broker_scenario(b: &Bench, kind: Kind) -> Scenario {
    let broker = Broker::connect(kind).await;
    let broker_pid = pid_on_port(kind.port()).unwrap_or(0);
    let n = if kind == Kind::AzureQueue {
        env_or("BENCH_AZURE_MESSAGES", 2_000)
    } else {
        b.messages
    };
    let mut s = Scenario::new(kind.label(), n);
    println!("== {} ({n} messages of {PAYLOAD} B)", kind.label());

    // Hop ceilings, each the faster of `HOP_TRIES` tries.
    let (mut published, mut consumed) = (None, None);
    for _ in 0..HOP_TRIES {
        let q = unique("hop");
        broker.create(&q).await;
        let p = broker.publisher(&q).await;
        let row = measured(n, &[broker_pid], publish(&p, n, kind.window(), None)).await;
        println!("publish (confirmed): {:.0}/s", row.rate);
        published = faster(published, row);
        let mut stream = broker.consume(&q).await;
        let row = measured(n, &[broker_pid], async { consume(&mut stream, n).await.0 }).await;
        drop(stream);
        broker.remove(&q).await;
        println!("consume (acked): {:.0}/s", row.rate);
        consumed = faster(consumed, row);
    }
    s.hop("publish with confirmation", published.expect("tried"));
    if kind.window() > WINDOW {
        // The output as the gateway uses it: at most its in-flight window awaiting
        // confirmation, so the confirmation's round trip bounds the rate.
        let q = unique("hop");
        broker.create(&q).await;
        let p = broker.publisher(&q).await;
        let row = measured(n, &[broker_pid], publish(&p, n, WINDOW, None)).await;
        broker.remove(&q).await;
        println!("publish (confirmed, {WINDOW} in flight): {:.0}/s", row.rate);
        s.windowed(
            &format!("publish with confirmation, {WINDOW} in flight"),
            row,
        );
    }
    s.hop(
        "consume + acknowledge (no-op handler)",
        consumed.expect("tried"),
    );
    s.hop(
        &format!("echo function called directly, {WINDOW} at once"),
        function_hop(b, n.min(100_000)).await,
    );

    // End to end from a backlog: switchyard, the hand-written bridge, the peer.
    let all = |pid: u32| vec![pid, broker_pid, b.echo_pid()];
    let mut rounds = Rounds::default();
    let runners = b.runners();
    for round in 0..b.rounds {
        for &runner in rotated(&runners, round) {
            if rounds.failed(runner) {
                continue;
            }
            let (input, output) = (unique("in"), unique("out"));
            broker.create(&input).await;
            broker.create(&output).await;
            let p = broker.publisher(&input).await;
            publish(&p, n, kind.window(), None).await;
            let served0 = b.served().await;
            let running = match start_runner(b, &broker, runner, &input, &output).await {
                Ok(r) => r,
                Err(why) => {
                    s.note(why);
                    rounds.fail(runner);
                    broker.remove(&input).await;
                    broker.remove(&output).await;
                    continue;
                }
            };
            let pid = running.pid();
            let row = drain(&broker, &output, n, pid, &all(pid)).await;
            drop(running);
            broker.remove(&input).await;
            broker.remove(&output).await;
            let calls = b.served().await - served0;
            let row = Row {
                calls,
                ok: calls >= n as u64,
                ..row
            };
            rounds.add(runner, round, row);
        }
    }
    rounds.record(&mut s, &runners);

    // Latency, open loop, at 50% and 80% of switchyard's maximum. Every runner is started at
    // once, each on queues of its own, and each step is taken in slices, the runners in turn
    // (rotated from slice to slice): a slow moment of the shared machine then falls on all of
    // them, not on one runner's whole step (single steps in turn gave differences of p99 that
    // swung by tens of milliseconds from run to run).
    let max = s.runs.first().map(|(_, r)| r.rate).unwrap_or(100.0);
    struct Live {
        runner: &'static str,
        input: String,
        output: String,
        out: BoxStream<'static, Msg>,
        publisher: Publisher,
        _running: Running,
    }
    let mut live = Vec::new();
    for runner in latency_runners(&b.runners()) {
        let (input, output) = (unique("lin"), unique("lout"));
        broker.create(&input).await;
        broker.create(&output).await;
        let Ok(running) = start_runner(b, &broker, runner, &input, &output).await else {
            broker.remove(&input).await;
            broker.remove(&output).await;
            continue;
        };
        if b.gateway_of(runner).is_some() {
            tokio::time::sleep(Duration::from_secs(2)).await;
            if runner == SWITCHYARD {
                s.rss_idle = mem_mib(running.pid(), "VmRSS:");
            }
        } else if runner == PEER {
            // It has no readiness endpoint.
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        let mut out = broker.consume(&output).await;
        let publisher = broker.publisher(&input).await;
        // Warm up: consumer groups joined, connections open, before anything is timed.
        let warm = 50;
        let (_, _) = tokio::join!(
            publish(&publisher, warm, warm, None),
            consume(&mut out, warm)
        );
        live.push(Live {
            runner,
            input,
            output,
            out,
            publisher,
            _running: running,
        });
    }
    let slice_secs = b.latency_secs / b.latency_slices as f64;
    let order: Vec<usize> = (0..live.len()).collect();
    for &share in &b.latency_shares {
        let rate = max * share;
        let count = ((rate * slice_secs) as usize).max(100);
        let mut ages = vec![Vec::new(); live.len()];
        for slice in 0..b.latency_slices {
            for &k in rotated(&order, slice) {
                let l = &mut live[k];
                let (_, (_, a)) = tokio::join!(
                    publish(&l.publisher, count, kind.window(), Some(rate)),
                    consume(&mut l.out, count)
                );
                ages[k].push(a);
            }
        }
        for (l, ages) in live.iter().zip(ages) {
            let l = Latency::sliced(l.runner, share, rate, ages);
            println!("{}", l.line());
            s.latency.push(l);
        }
    }
    for l in live {
        drop((l.out, l.publisher, l._running));
        broker.remove(&l.input).await;
        broker.remove(&l.output).await;
    }
    s
}

/// The http scenario: the function called directly against through switchyard's http trigger
/// (`response: sync`) and through the peer's http input.
async fn http_scenario(b: &Bench) -> Scenario {
    let n = b.messages.min(100_000);
    let mut s = Scenario::new("http (request → function → reply)", n);
    println!("== http ({n} requests of {PAYLOAD} B)");
    s.hop(
        &format!("echo function called directly, {WINDOW} at once"),
        function_hop(b, n).await,
    );

    let mut runners: Vec<(&str, String, Proc)> = Vec::new();
    for name in [SWITCHYARD, SWITCHYARD_B] {
        if b.gateway_of(name).is_none() {
            continue;
        }
        let ingress = free_port();
        let gw = b.start_gateway(name, HTTP_PIPELINE, Some(ingress)).await;
        if name == SWITCHYARD {
            tokio::time::sleep(Duration::from_secs(2)).await;
            s.rss_idle = mem_mib(gw.pid(), "VmRSS:");
        }
        runners.push((name, format!("http://127.0.0.1:{ingress}/in"), gw));
    }
    let port = free_port();
    if let Some(peer) = b
        .start_peer(
            &format!("{{ http: {{ url: \"127.0.0.1:{port}\" }} }}"),
            "{ response: {} }",
        )
        .await
    {
        wait_port(port, "the peer").await;
        runners.push((PEER, format!("http://127.0.0.1:{port}/"), peer));
    } else {
        s.note("The peer was not run (BENCH_PEER unset).");
    }
    let mut rounds = Rounds::default();
    let names: Vec<&str> = runners.iter().map(|(name, _, _)| *name).collect();
    for round in 0..b.rounds {
        for (name, url, p) in rotated(&runners, round) {
            let served0 = b.served().await;
            let (own0, p0, all0) = (
                own_cpu_seconds(),
                cpu_of(&[p.pid()]),
                cpu_of(&[p.pid(), b.echo_pid()]),
            );
            let secs = call_function(b, url, n).await;
            let calls = b.served().await - served0;
            let row = Row {
                rate: n as f64 / secs,
                cpu_us: (cpu_of(&[p.pid()]) - p0) / n as f64 * 1e6,
                cpu_all_us: (own_cpu_seconds() - own0 + cpu_of(&[p.pid(), b.echo_pid()]) - all0)
                    / n as f64
                    * 1e6,
                rss_peak: mem_mib(p.pid(), "VmHWM:"),
                rss_end: mem_mib(p.pid(), "VmRSS:"),
                rss_max: mem_mib(p.pid(), "VmHWM:"),
                calls,
                ok: calls >= n as u64,
            };
            rounds.add(name, round, row);
        }
    }
    rounds.record(&mut s, &names);
    // Latency in slices, the function called directly and the runners in turn, as in
    // `broker_scenario`.
    let max = s.runs.first().map(|(_, r)| r.rate).unwrap_or(100.0);
    let mut targets = vec![(RAW, b.echo_url.clone())];
    targets.extend(runners.iter().map(|(name, url, _)| (*name, url.clone())));
    // switchyard's control, in the latency steps only, right after switchyard.
    let ingress = free_port();
    let _control = b.start_gateway(CONTROL, HTTP_PIPELINE, Some(ingress)).await;
    targets.insert(2, (CONTROL, format!("http://127.0.0.1:{ingress}/in")));
    let slice_secs = b.latency_secs / b.latency_slices as f64;
    let order: Vec<usize> = (0..targets.len()).collect();
    for &share in &b.latency_shares {
        let rate = max * share;
        let mut ages = vec![Vec::new(); targets.len()];
        for slice in 0..b.latency_slices {
            for &k in rotated(&order, slice) {
                ages[k].push(open_loop_http(&targets[k].1, rate, slice_secs).await);
            }
        }
        for ((name, _), ages) in targets.iter().zip(ages) {
            let l = Latency::sliced(name, share, rate, ages);
            println!("{}", l.line());
            s.latency.push(l);
        }
    }
    s.note("In this scenario the hand-written bridge's latency is the function called directly.");
    s
}

/// Open-loop load opens a connection per request in flight: allow as many files as we may.
fn raise_file_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// The binary the environment variable `var` names, if set; it must exist.
fn binary_from(var: &str) -> Option<PathBuf> {
    let path = std::env::var_os(var).map(PathBuf::from)?;
    assert!(
        path.exists(),
        "{var} names {}, which does not exist",
        path.display()
    );
    Some(path)
}

/// The client the harness and the hand-written bridge call the function with.
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(WINDOW)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .build()
        .expect("http client")
}

/// `bridge <kind> <input> <output> <function url>`: the hand-written bridge as a process of
/// its own (`RAW_PROCESS`), until it is stopped.
async fn bridge_mode(args: &[String]) {
    let [kind, input, output, url] = args else {
        panic!("bridge mode: <kind> <input> <output> <function url>, not {args:?}");
    };
    let kind = Kind::from_name(kind).unwrap_or_else(|| panic!("unknown kind {kind:?}"));
    let broker = Broker::connect(kind).await;
    let _ = raw_bridge(&broker, http_client(), url.clone(), input, output)
        .await
        .await;
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("bridge") {
        return bridge_mode(&args[2..]).await;
    }
    raise_file_limit();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let gateway = std::env::var_os("BENCH_GATEWAY")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/release/switchyard"));
    assert!(
        gateway.exists(),
        "no switchyard binary at {} (cargo build --release, or set BENCH_GATEWAY)",
        gateway.display()
    );
    let gateway_b = binary_from("BENCH_GATEWAY_B");
    let peer = binary_from("BENCH_PEER");
    let echo_bin = std::env::current_exe()
        .expect("own path")
        .with_file_name("bench-echo");
    let dir = std::env::temp_dir().join(unique("run"));
    std::fs::create_dir_all(&dir).expect("scratch folder");
    let echo_port = free_port();
    let echo = Proc::spawn(
        "bench-echo",
        Command::new(&echo_bin).arg(echo_port.to_string()),
        &dir.join("echo.log"),
    );
    wait_port(echo_port, "the echo function").await;
    let b = Bench {
        echo,
        echo_url: format!("http://127.0.0.1:{echo_port}/"),
        gateway,
        gateway_b,
        peer,
        dir: dir.clone(),
        client: http_client(),
        messages: env_or("BENCH_MESSAGES", 200_000),
        latency_secs: env_or("BENCH_LATENCY_SECS", 10.0),
        latency_slices: env_or("BENCH_LATENCY_SLICES", 5).max(1),
        latency_shares: latency_shares(),
        rounds: env_or("BENCH_ROUNDS", 3).max(1),
    };
    let which = std::env::var("BENCH_SCENARIOS").unwrap_or_else(|_| SCENARIOS.into());
    let out = std::env::var_os("BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("bench/results"));
    if std::env::var_os("BENCH_INSTRUCTIONS").is_some() {
        // Instructions per message under callgrind instead of the timed benchmark.
        let n = env_or("BENCH_INSTRUCTIONS_MESSAGES", 5_000);
        let mut sections = Vec::new();
        for name in which.split(',').map(str::trim) {
            sections.push(match (Kind::from_name(name), name) {
                (Some(Kind::AzureQueue), _) => {
                    instructions::broker(&b, Kind::AzureQueue, n.min(1_000)).await
                }
                (Some(kind), _) => instructions::broker(&b, kind, n).await,
                (None, "http") => instructions::http(&b, n).await,
                (None, other) => panic!("unknown scenario {other:?}"),
            });
        }
        println!("wrote {}", instructions::write(&out, &sections).display());
    } else {
        timed(&b, &which, &out).await;
    }
    if std::env::var_os("BENCH_KEEP").is_some() {
        println!(
            "the processes' logs (and any callgrind dumps) are in {}",
            dir.display()
        );
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The timed benchmark of the scenarios in `which`: the report and chart written into `out`.
async fn timed(b: &Bench, which: &str, out: &Path) {
    let mut scenarios = Vec::new();
    for name in which.split(',').map(str::trim) {
        let s = match (Kind::from_name(name), name) {
            (Some(kind), _) => broker_scenario(b, kind).await,
            (None, "http") => http_scenario(b).await,
            (None, other) => panic!("unknown scenario {other:?}"),
        };
        scenarios.push(s);
    }
    let (md, svg) = report::write(out, &scenarios, b.peer.is_some());
    println!("wrote {} and {}", md.display(), svg.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latency_steps_add_the_control_and_the_bridge_process_beside_their_originals() {
        assert_eq!(
            latency_runners(&[SWITCHYARD, SWITCHYARD_B, RAW, PEER]),
            [SWITCHYARD, CONTROL, SWITCHYARD_B, RAW, RAW_PROCESS, PEER]
        );
        for kind in Kind::ALL {
            assert_eq!(Kind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(Kind::from_name("http"), None);
        // Every scenario a run takes by default is a broker kind, but for http.
        let named: Vec<_> = SCENARIOS.split(',').map(Kind::from_name).collect();
        assert_eq!(
            named,
            [
                Some(Kind::Kafka),
                Some(Kind::RabbitMq),
                Some(Kind::JetStream),
                Some(Kind::AzureQueue),
                None
            ]
        );
    }

    /// Every config the harness gives switchyard, with each setting and without, is one
    /// switchyard's own loader accepts, with the settings where they were asked for: a key a
    /// route does not have fails the whole scenario's run only after the ceilings and the
    /// first rounds (as `attributes` on the Azure queue output once did).
    #[test]
    fn every_gateway_config_of_the_harness_is_valid() {
        let mut pipelines: Vec<String> = Kind::ALL
            .iter()
            .map(|k| k.gateway_pipeline("in1", "out1"))
            .collect();
        pipelines.push(HTTP_PIPELINE.to_string());
        let settings = [
            (None, None),
            (Some("application/json"), Some(false)),
            (Some("application/vnd.orders+json"), Some(true)),
        ];
        for pipeline in &pipelines {
            let ingress = if pipeline == HTTP_PIPELINE {
                "ingress: { listen: \"127.0.0.1:8081\" }\n"
            } else {
                ""
            };
            for (ct, attributes) in settings {
                for held in ["", "    max_in_flight: 64\n"] {
                    let yaml = gateway_config(
                        8080,
                        ingress,
                        "http://127.0.0.1:9000/",
                        held,
                        &with_settings(pipeline, ct, attributes),
                    );
                    let config =
                        switchyard::config::load_str(&yaml, "bench.yaml", &switchyard::config::Env)
                            .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
                    // The typed config, as the gateway would run it.
                    let p = &config.pipelines["bench"];
                    let (trigger, outputs) =
                        (format!("{:?}", p.trigger), format!("{:?}", p.outputs));
                    if pipeline == HTTP_PIPELINE {
                        assert!(!yaml.contains("content_type"), "{yaml}");
                        continue;
                    }
                    match ct {
                        Some(ct) => assert!(
                            trigger.contains(&format!("content_type: Some(MediaType(\"{ct}\"))")),
                            "{trigger}"
                        ),
                        None => assert!(trigger.contains("content_type: None"), "{trigger}"),
                    }
                    let azure = outputs.contains("AzureQueue");
                    let expected = format!("attributes: {}", attributes.unwrap_or(true));
                    assert_eq!(outputs.contains(&expected), !azure, "{yaml}");
                }
            }
        }
    }

    fn row(rate: f64, ok: bool) -> Row {
        Row {
            rate,
            calls: 10,
            ok,
            ..Row::default()
        }
    }

    #[test]
    fn rounds_take_each_runners_median_and_rotate() {
        let order: Vec<_> = rotated(&["a", "b", "c"], 1).copied().collect();
        assert_eq!(order, ["b", "c", "a"]);
        let order: Vec<_> = rotated(&["a", "b", "c"], 3).copied().collect();
        assert_eq!(order, ["a", "b", "c"]);
        let mut r = Rounds::default();
        for rate in [30.0, 10.0, 20.0] {
            r.add("b", 0, row(rate * 2.0, true));
            r.add("a", 0, row(rate, rate != 10.0));
        }
        let mut s = Scenario::new("x", 10);
        r.record(&mut s, &["a", "b"]);
        assert_eq!(s.runs[0].0, "a");
        assert_eq!(s.runs[0].1.rate, 20.0);
        assert!(!s.runs[0].1.ok, "one failed round fails the runner");
        assert_eq!(s.runs[1].1.rate, 40.0);
        assert!(s.runs[1].1.ok);
        assert!(s.notes[0].contains("a 30 / 10 / 20"), "{}", s.notes[0]);
        assert_eq!(median(&[row(5.0, true), row(1.0, true)]).rate, 1.0);
    }

    #[test]
    fn a_second_build_is_compared_round_by_round() {
        let mut r = Rounds::default();
        for (a, b) in [(100.0, 110.0), (50.0, 60.0)] {
            r.add(
                SWITCHYARD,
                0,
                Row {
                    cpu_us: 40.0,
                    ..row(a, true)
                },
            );
            r.add(
                SWITCHYARD_B,
                0,
                Row {
                    cpu_us: 30.0,
                    ..row(b, true)
                },
            );
        }
        let mut s = Scenario::new("x", 10);
        r.record(&mut s, &[SWITCHYARD, SWITCHYARD_B]);
        let note = s
            .notes
            .iter()
            .find(|n| n.starts_with(SWITCHYARD_B))
            .expect("a note");
        assert!(note.contains("msg/s 1.10 / 1.20"), "{note}");
        assert!(note.contains("per message 0.75 / 0.75"), "{note}");
        // Without the second build there is no such note.
        let mut r = Rounds::default();
        r.add(SWITCHYARD, 0, row(1.0, true));
        let mut s = Scenario::new("x", 10);
        r.record(&mut s, &[SWITCHYARD]);
        assert!(s.notes.iter().all(|n| !n.starts_with(SWITCHYARD_B)));
    }

    #[test]
    fn payload_is_one_kib_of_json_that_carries_its_publish_time() {
        let body = payload(7);
        assert_eq!(body.len(), PAYLOAD);
        let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(v["n"], 7);
        assert!(v["items"].as_array().is_some_and(|a| a.len() > 10));
        assert_ne!(payload(7), payload(8));
        // The longest head (the largest `i`) still cuts in the note: valid JSON of 1 KiB.
        let last = payload(usize::MAX);
        assert_eq!(last.len(), PAYLOAD);
        let v: serde_json::Value = serde_json::from_slice(&last).expect("JSON");
        assert!(v["note"].as_str().is_some_and(|n| !n.is_empty()));
        let age = age_us(&body).expect("a publish time");
        assert!(age < 5_000_000, "age {age} µs");
        assert_eq!(age_us(b"{\"t\":not a number}"), None);
    }

    #[test]
    fn cpu_seconds_of_this_process_grow_with_work() {
        let before = own_cpu_seconds();
        let mut x = 0u64;
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(300) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        assert!(own_cpu_seconds() - before >= 0.1);
        assert_eq!(procs::cpu_seconds(u32::MAX), 0.0);
    }
}
