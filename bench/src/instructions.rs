//! Instructions per message, counted by valgrind's callgrind (`BENCH_INSTRUCTIONS`).
//!
//! CPU time on this machine spreads ±15-29% between identical runs, so a change worth a few
//! percent cannot be seen in a handful of drains. Callgrind counts the instructions a process
//! executes, which do not depend on what else the machine is doing: the same binary doing the
//! same work gives the same count to within a fraction of a percent. Each runner (switchyard,
//! `BENCH_GATEWAY_B`, the peer) runs under callgrind on the scenario's route; a warm-up goes
//! through first (connections open, consumers joined, lazy set-up done), then the counters are
//! zeroed, `n` messages are published and drained, and the counters are dumped. The report
//! gives the instructions per message and where they go (the top functions by their own
//! instructions, and their sum by crate).
//!
//! What it does not say: time. Under callgrind a process runs some fifty times slower on one
//! thread at a time, so a runner that batches by what arrived together (rounds of writes,
//! acks) sees larger rounds than at full speed; both runners are measured the same way.

use crate::brokers::{Broker, Kind};
use crate::report::{PEER, SWITCHYARD, SWITCHYARD_B};
use crate::{call_function, publish, unique, wait_port, Bench, Proc, WINDOW};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Messages through a runner before the counters are zeroed.
const WARM: usize = 500;

/// One runner's count.
pub struct Count {
    pub runner: String,
    pub messages: usize,
    /// Instructions executed from the zeroing to the dump (every thread).
    pub instructions: u64,
    /// The top functions by their own instructions (per message, share), one a line.
    pub by_function: String,
    /// Instructions per message summed by crate (the first path segment of each function).
    pub by_crate: Vec<(String, f64)>,
}

/// The section of the report for one scenario.
pub struct Section {
    pub name: String,
    pub counts: Vec<Count>,
    pub notes: Vec<String>,
}

fn valgrind(out: &Path) -> Vec<String> {
    vec![
        "valgrind".into(),
        "--tool=callgrind".into(),
        format!("--callgrind-out-file={}", out.display()),
        // Jumps are not needed; the cache simulation is off by default.
        "--dump-instr=no".into(),
    ]
}

/// `callgrind_control <what> <pid>`: `-z` zeroes the counters, `-d` dumps them.
fn control(what: &str, pid: u32) {
    let ok = Command::new("callgrind_control")
        .args([what, &pid.to_string()])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(ok, "callgrind_control {what} {pid} failed");
}

/// Wait until `output` holds `n` messages (the runner is slow under callgrind: up to 30 min).
async fn wait_count(broker: &Broker, output: &str, n: usize, runner: &mut Proc) {
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let c = broker.count(output).await;
        if c >= n {
            return;
        }
        runner.alive();
        assert!(
            Instant::now() < deadline,
            "{output}: {c} of {n} after 30 min"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Zero the counters of process `pid` (under callgrind), run `work`, dump, and read the dump.
async fn counted<F: std::future::Future<Output = ()>>(
    runner: &str,
    pid: u32,
    out: &Path,
    n: usize,
    work: F,
) -> Count {
    control("-z", pid);
    work.await;
    control("-d", pid);
    // The first dump of `--callgrind-out-file=X` is written to `X.1`.
    let dump = PathBuf::from(format!("{}.1", out.display()));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !dump.exists() {
        assert!(Instant::now() < deadline, "no dump at {}", dump.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The dump is written by the process itself; give it a moment to finish.
    tokio::time::sleep(Duration::from_secs(2)).await;
    read(runner, n, &dump)
}

fn read(runner: &str, n: usize, dump: &Path) -> Count {
    let text = std::fs::read_to_string(dump).expect("read the dump");
    let instructions = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("a summary line in the dump");
    let functions = self_costs(&text);
    let by_function = functions
        .iter()
        .take(40)
        .map(|(f, c)| {
            format!(
                "{:>9.0} {:>5.1}%  {f}",
                *c as f64 / n as f64,
                100.0 * *c as f64 / instructions as f64
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut by_crate: Vec<(String, f64)> = Vec::new();
    for (f, c) in &functions {
        let name = crate_of(f);
        match by_crate.iter_mut().find(|(k, _)| *k == name) {
            Some((_, s)) => *s += *c as f64,
            None => by_crate.push((name, *c as f64)),
        }
    }
    for (_, s) in &mut by_crate {
        *s /= n as f64;
    }
    by_crate.sort_by(|a, b| b.1.total_cmp(&a.1));
    Count {
        runner: runner.to_string(),
        messages: n,
        instructions,
        by_function,
        by_crate,
    }
}

/// Each function's own instructions (its calls' excluded), largest first, from a callgrind
/// dump (`positions: line`, `events: Ir`). Read here rather than with callgrind_annotate,
/// which puts nearly everything under the task's poll function for these binaries.
fn self_costs(dump: &str) -> Vec<(String, u64)> {
    // Names are written once with their number, `fn=(12) name`, then as `fn=(12)`.
    let mut names: HashMap<String, String> = HashMap::new();
    let mut name = |v: &str| -> String {
        match v.strip_prefix('(').and_then(|r| r.split_once(')')) {
            Some((id, rest)) => {
                let rest = rest.trim();
                if !rest.is_empty() {
                    names.insert(id.to_string(), rest.to_string());
                }
                names.get(id).cloned().unwrap_or_else(|| v.to_string())
            }
            None => v.to_string(),
        }
    };
    let mut costs: HashMap<String, u64> = HashMap::new();
    let mut function = String::new();
    // The cost line after `calls=` is the call's inclusive cost, not the caller's own.
    let mut call_cost = false;
    for line in dump.lines() {
        if let Some(v) = line.strip_prefix("fn=") {
            function = name(v);
        } else if let Some(v) = line
            .strip_prefix("cfn=")
            .or_else(|| line.strip_prefix("cfni="))
        {
            // The same numbering as `fn=`: a callee named here first keeps its name.
            name(v);
        } else if line.starts_with("calls=") {
            call_cost = true;
        } else if line.starts_with(|c: char| c.is_ascii_digit() || "+-*".contains(c)) {
            let cost = line
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse::<u64>().ok());
            if let (Some(cost), false) = (cost, call_cost) {
                *costs.entry(function.clone()).or_default() += cost;
            }
            call_cost = false;
        }
    }
    let mut costs: Vec<(String, u64)> = costs.into_iter().collect();
    costs.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    costs
}

/// The crate of a function's name: its path's first segment (`tokio::runtime::…` → `tokio`,
/// `<bytes::Bytes as …>` → `bytes`); a name without a path (C: libc, mimalloc) is `C`, and
/// mimalloc's own (`mi_*`, `_mi_*`) are `mimalloc`.
fn crate_of(func: &str) -> String {
    let name = func.trim().trim_start_matches(['<', '&', '*', ' ']);
    let name = name.strip_prefix("mut ").unwrap_or(name);
    let name = name.strip_prefix("dyn ").unwrap_or(name);
    match name.split_once("::") {
        Some((first, _)) if !first.is_empty() && !first.contains([' ', '<', '>']) => {
            first.to_string()
        }
        _ if name.starts_with("mi_") || name.starts_with("_mi_") => "mimalloc".to_string(),
        _ => "C".to_string(),
    }
}

/// Count each runner on the route of `kind`: a backlog published while it drains.
pub async fn broker(b: &Bench, kind: Kind, n: usize) -> Section {
    let broker = Broker::connect(kind).await;
    let mut section = Section {
        name: kind.label().to_string(),
        counts: Vec::new(),
        notes: Vec::new(),
    };
    for runner in runners(b) {
        let (input, output) = (unique("cgin"), unique("cgout"));
        broker.create(&input).await;
        broker.create(&output).await;
        let out = b.dir.join(format!("callgrind-{input}"));
        let wrapper = valgrind(&out);
        let mut proc =
            match crate::start_process(b, &broker, runner, &input, &output, &wrapper).await {
                Ok(p) => p,
                Err(why) => {
                    section.notes.push(format!("{runner}: {why}"));
                    broker.remove(&input).await;
                    broker.remove(&output).await;
                    continue;
                }
            };
        println!("{runner} under callgrind: warming up with {WARM} messages");
        let p = broker.publisher(&input).await;
        publish(&p, WARM, kind.window(), None).await;
        wait_count(&broker, &output, WARM, &mut proc).await;
        println!("{runner} under callgrind: {n} messages");
        let pid = proc.pid();
        let count = counted(runner, pid, &out, n, async {
            publish(&p, n, kind.window(), None).await;
            wait_count(&broker, &output, WARM + n, &mut proc).await;
        })
        .await;
        println!(
            "{runner}: {:.0} instructions per message",
            count.instructions as f64 / n as f64
        );
        section.counts.push(count);
        drop(proc);
        broker.remove(&input).await;
        broker.remove(&output).await;
    }
    section
}

/// Count each runner's http route: requests through its http trigger to the function and back.
pub async fn http(b: &Bench, n: usize) -> Section {
    let mut section = Section {
        name: "http (request → function → reply)".to_string(),
        counts: Vec::new(),
        notes: Vec::new(),
    };
    for runner in runners(b) {
        let port = crate::free_port();
        let out = b.dir.join(format!("callgrind-http-{port}"));
        let wrapper = valgrind(&out);
        let (proc, url) = match b.gateway_of(runner) {
            Some(_) => (
                Some(
                    b.start_gateway_in(
                        runner,
                        "    trigger: { type: http, path: /in, response: sync }\n    outputs: []\n",
                        Some(port),
                        &wrapper,
                    )
                    .await,
                ),
                format!("http://127.0.0.1:{port}/in"),
            ),
            None => (
                b.start_peer_in(
                    &format!("{{ http: {{ url: \"127.0.0.1:{port}\" }} }}"),
                    "{ response: {} }",
                    &wrapper,
                )
                .await,
                format!("http://127.0.0.1:{port}/"),
            ),
        };
        let Some(proc) = proc else {
            section.notes.push(format!("{runner}: not run."));
            continue;
        };
        wait_port(port, runner).await;
        println!("{runner} under callgrind: warming up with {WARM} requests");
        call_function(b, &url, WARM).await;
        println!("{runner} under callgrind: {n} requests");
        let count = counted(runner, proc.pid(), &out, n, async {
            call_function(b, &url, n).await;
        })
        .await;
        println!(
            "{runner}: {:.0} instructions per request",
            count.instructions as f64 / n as f64
        );
        section.counts.push(count);
    }
    section
}

fn runners(b: &Bench) -> Vec<&'static str> {
    let mut r = vec![SWITCHYARD];
    if b.gateway_b.is_some() {
        r.push(SWITCHYARD_B);
    }
    if b.peer.is_some() {
        r.push(PEER);
    }
    r
}

/// Write `<dir>/<date>-instructions.md`; its path.
pub fn write(dir: &Path, sections: &[Section]) -> PathBuf {
    let date = crate::report::shell("date", &["+%F"]);
    let commit = crate::report::shell("git", &["rev-parse", "--short", "HEAD"]);
    let path = dir.join(format!("{date}-instructions.md"));
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# switchyard benchmark: instructions per message ({date})\n\n\
         Counted by valgrind's callgrind (`BENCH_INSTRUCTIONS=1 scripts/bench`): each runner ran \
         under callgrind, {WARM} messages went through first, then its counters were zeroed and \
         the messages below were published and drained (every thread of the runner, user space \
         only; the kernel's work for its system calls is not counted). The count does not \
         depend on the machine's load: the same binary doing the same work counts the same. \
         Instructions are not time: a tight loop runs several per cycle, a cache miss or a \
         system call costs hundreds of cycles for one; and valgrind's virtual CPU lacks some \
         extensions (SHA-NI among them), so code that uses one natively is counted on its \
         software path (the RabbitMQ trigger's SHA-256 of a body that has no message id). \
         Checkout `{commit}` (`BENCH_GATEWAY` and `BENCH_GATEWAY_B` name the builds measured, \
         the production build of it by default). The window is {WINDOW} in flight for every \
         runner, as in the timed benchmark.\n"
    );
    for s in sections {
        let _ = writeln!(md, "## {}\n", s.name);
        if let Some(base) = s.counts.first() {
            let base = base.instructions as f64 / base.messages as f64;
            let _ = writeln!(
                md,
                "| runner | messages | instructions per message | ÷ {SWITCHYARD} |\n|---|---|---|---|"
            );
            for c in &s.counts {
                let per = c.instructions as f64 / c.messages as f64;
                let _ = writeln!(
                    md,
                    "| {} | {} | {:.0} | {:.2} |",
                    c.runner,
                    c.messages,
                    per,
                    per / base
                );
            }
            md.push('\n');
        }
        for c in &s.counts {
            let _ = writeln!(
                md,
                "### {}: instructions per message by crate (self cost)\n",
                c.runner
            );
            let _ = writeln!(
                md,
                "| crate or object | instructions per message |\n|---|---|"
            );
            for (name, per) in c.by_crate.iter().filter(|(_, per)| *per >= 100.0) {
                let _ = writeln!(md, "| {name} | {per:.0} |");
            }
            let _ = writeln!(
                md,
                "\n<details><summary>{}: the top functions by their own instructions \
                 (per message, share of all; {} messages)</summary>\n\n```\n{}\n```\n</details>\n",
                c.runner, c.messages, c.by_function
            );
        }
        for n in &s.notes {
            let _ = writeln!(md, "- {n}");
        }
    }
    std::fs::create_dir_all(dir).expect("results folder");
    std::fs::write(&path, md).expect("write the report");
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_costs_leave_out_what_calls_cost() {
        let dump = "\
events: Ir
summary: 1150
fl=(1) src/a.rs
fn=(1) tokio::runtime::task::raw::poll
10 100
cfn=(2) <bytes::Bytes as core::clone::Clone>::clone
calls=3 20
11 700
12 50
fn=(2)
20 500
fn=(3) mi_free
1 400
+1 100
";
        let costs = self_costs(dump);
        assert_eq!(
            costs,
            vec![
                (
                    "<bytes::Bytes as core::clone::Clone>::clone".to_string(),
                    500
                ),
                ("mi_free".to_string(), 500),
                ("tokio::runtime::task::raw::poll".to_string(), 150),
            ],
            "a call's 700 is the callee's, not the caller's"
        );
        let crates: Vec<String> = costs.iter().map(|(f, _)| crate_of(f)).collect();
        assert_eq!(crates, ["bytes", "mimalloc", "tokio"]);
        assert_eq!(crate_of("__memcpy_avx_unaligned_erms"), "C");
    }
}
