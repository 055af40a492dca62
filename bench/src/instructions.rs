//! Instructions per message, counted by valgrind's callgrind (`BENCH_INSTRUCTIONS`).
//!
//! CPU time on this machine spreads ±15-29% between identical runs, so a change worth a few
//! percent cannot be seen in a handful of drains. Callgrind counts the instructions a process
//! executes, which do not depend on what else the machine is doing: the same binary doing the
//! same work gives the same count to within a fraction of a percent. Each runner (switchyard,
//! `BENCH_GATEWAY_B`, the peer) runs under callgrind on the scenario's route; a warm-up goes
//! through first (connections open, consumers joined, lazy set-up done), then the counters are
//! zeroed, `n` messages are published and drained, and the counters are dumped. The report
//! gives the instructions per message and where they go (callgrind_annotate's top functions,
//! and their sum by crate).
//!
//! What it does not say: time. Under callgrind a process runs some fifty times slower on one
//! thread at a time, so a runner that batches by what arrived together (rounds of writes,
//! acks) sees larger rounds than at full speed; both runners are measured the same way.

use crate::brokers::{Broker, Kind};
use crate::report::{PEER, SWITCHYARD, SWITCHYARD_B};
use crate::{call_function, publish, unique, wait_port, Bench, Proc, WINDOW};
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
    /// callgrind_annotate's summary of the dump: top functions by their own instructions.
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
    let annotate = Command::new("callgrind_annotate")
        .args(["--threshold=100", "--auto=no"])
        .arg(dump)
        .output()
        .expect("callgrind_annotate");
    let annotate = String::from_utf8_lossy(&annotate.stdout).into_owned();
    let by_crate = by_crate(&annotate, n);
    let by_function = annotate
        .lines()
        .filter(|l| l.contains(':') && l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .take(30)
        .collect::<Vec<_>>()
        .join("\n");
    Count {
        runner: runner.to_string(),
        messages: n,
        instructions,
        by_function,
        by_crate,
    }
}

/// Sum callgrind_annotate's lines (`1,234 (0.5%)  file:function [object]`) by crate: the first
/// segment of the function's path (`tokio::runtime::…` → `tokio`, `<bytes::Bytes as …>` →
/// `bytes`), `libc` and the kernel's entry points by their object; per message.
fn by_crate(annotate: &str, n: usize) -> Vec<(String, f64)> {
    let mut sums: Vec<(String, f64)> = Vec::new();
    for line in annotate.lines() {
        let line = line.trim_start();
        let Some((count, rest)) = line.split_once(' ') else {
            continue;
        };
        let Ok(count) = count.replace(',', "").parse::<u64>() else {
            continue;
        };
        // After the count: an optional "(x%)", then "file:function [object]".
        let rest = rest.trim_start();
        let rest = match rest.strip_prefix('(') {
            Some(r) => r.split_once(')').map(|(_, r)| r.trim_start()).unwrap_or(r),
            None => rest,
        };
        let Some((_, func)) = rest.split_once(':') else {
            continue;
        };
        let name = crate_of(func);
        match sums.iter_mut().find(|(c, _)| *c == name) {
            Some((_, s)) => *s += count as f64,
            None => sums.push((name, count as f64)),
        }
    }
    for (_, s) in &mut sums {
        *s /= n as f64;
    }
    sums.sort_by(|a, b| b.1.total_cmp(&a.1));
    sums
}

fn crate_of(func: &str) -> String {
    let func = func.trim();
    let (name, object) = match func.rsplit_once(" [") {
        Some((n, o)) => (n, o.trim_end_matches(']')),
        None => (func, ""),
    };
    let name = name.trim_start_matches(['<', '&', '*', ' ']);
    let name = name.strip_prefix("mut ").unwrap_or(name);
    let name = name.strip_prefix("dyn ").unwrap_or(name);
    match name.split_once("::") {
        Some((first, _)) if !first.is_empty() && !first.contains(' ') => first.to_string(),
        _ => {
            let object = object.rsplit('/').next().unwrap_or(object);
            if object.is_empty() {
                "other".to_string()
            } else {
                object.to_string()
            }
        }
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
        let proc = match b.gateway_of(runner) {
            Some(bin) => Some(
                b.start_gateway_in(
                    bin,
                    &broker.gateway_pipeline(&input, &output),
                    None,
                    &wrapper,
                )
                .await,
            ),
            None => match broker.peer_endpoints(&input, &output) {
                Some((pin, pout)) => b.start_peer_in(&pin, &pout, &wrapper).await,
                None => None,
            },
        };
        let Some(mut proc) = proc else {
            section
                .notes
                .push(format!("{runner}: not run (no binary, or no connector)."));
            broker.remove(&input).await;
            broker.remove(&output).await;
            continue;
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
            Some(bin) => (
                Some(
                    b.start_gateway_in(
                        bin,
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
         Commit `{commit}`. The window is {WINDOW} in flight for every runner, as in the \
         timed benchmark.\n"
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
                "\n<details><summary>{}: the top functions (callgrind_annotate, self cost, all \
                 {} messages)</summary>\n\n```\n{}\n```\n</details>\n",
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
    fn annotate_lines_sum_by_crate() {
        let annotate = "\
--------------------------------------------------------------------------------
Ir
--------------------------------------------------------------------------------
3,000 (100.0%)  PROGRAM TOTALS
--------------------------------------------------------------------------------
Ir           file:function
--------------------------------------------------------------------------------
1,000 (33.3%)  ???:tokio::runtime::task::raw::poll [/bin/switchyard]
  500 (16.6%)  src/x.rs:<bytes::Bytes as core::clone::Clone>::clone [/bin/switchyard]
  400 (13.3%)  ./malloc/malloc.c:malloc [/usr/lib/x86_64-linux-gnu/libc.so.6]
  100  ???:tokio::time::sleep [/bin/switchyard]
";
        let sums = by_crate(annotate, 10);
        assert_eq!(
            sums,
            vec![
                ("tokio".to_string(), 110.0),
                ("bytes".to_string(), 50.0),
                ("libc.so.6".to_string(), 40.0),
            ],
            "PROGRAM TOTALS is not a function"
        );
    }
}
