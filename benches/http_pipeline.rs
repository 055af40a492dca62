//! Benchmark: http trigger → function → outputs, against calling the same function directly.
//!
//! Run with `scripts/bench` (or `cargo bench --bench http_pipeline`). For each function (an
//! in-process Rust echo server, the ceiling of what the gateway can be fed, and the Python
//! example function as a real function process) it measures, in the same run:
//!
//! - the function called directly: requests/s and latency (p50, p99);
//! - the same load through switchyard (`response: sync`, so each request waits until the
//!   outputs confirmed their writes): requests/s, latency, and the added latency;
//! - switchyard's peak resident memory (VmHWM) and RSS after the run.
//!
//! Knobs: BENCH_REQUESTS (default 20000), BENCH_CONCURRENCY (default 32).

mod common;

use common::{free_port, mem_mib, rust_echo};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Load {
    rps: f64,
    p50: Duration,
    p99: Duration,
    errors: usize,
}

async fn load(client: &reqwest::Client, url: &str, ce_headers: bool, n: usize, c: usize) -> Load {
    let started = Instant::now();
    let per = n / c;
    let mut tasks = Vec::new();
    for w in 0..c {
        let client = client.clone();
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per);
            let mut errors = 0;
            for i in 0..per {
                let body = format!(
                    "{{\"worker\":{w},\"i\":{i},\"pad\":\"{}\"}}",
                    "x".repeat(200)
                );
                let mut req = client.post(&url).header("content-type", "application/json");
                if ce_headers {
                    req = req
                        .header("ce-specversion", "1.0")
                        .header("ce-id", format!("{w}-{i}"))
                        .header("ce-source", "bench")
                        .header("ce-type", "bench");
                }
                let t = Instant::now();
                match req.body(body).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        lat.push(t.elapsed());
                    }
                    _ => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::with_capacity(n);
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        all.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Load {
        rps: all.len() as f64 / elapsed.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
        errors,
    }
}

async fn wait_for(client: &reqwest::Client, url: &str) {
    for _ in 0..400 {
        if let Ok(r) = client.get(url).send().await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{url} never became ready");
}

struct Gateway {
    child: Child,
    ingress: u16,
    _dir: tempfile::TempDir,
}

async fn start_gateway(client: &reqwest::Client, function_url: &str, output: &str) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let (admin, ingress) = (free_port(), free_port());
    let out = match output {
        "stdout" => "{ name: out, type: stdout }".to_string(),
        _ => format!(
            "{{ name: out, type: directory, path: \"{}/out/{{id}}.json\" }}",
            dir.path().display()
        ),
    };
    let yaml = format!(
        "admin: {{ listen: \"127.0.0.1:{admin}\" }}
ingress: {{ listen: \"127.0.0.1:{ingress}\" }}
functions:
  f: {{ url: \"{function_url}\", concurrency: 64 }}
pipelines:
  p:
    trigger: {{ type: http, path: /in, response: sync }}
    function: f
    outputs: [ {out} ]
"
    );
    let cfg = dir.path().join("switchyard.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["run", "-c"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    wait_for(client, &format!("http://127.0.0.1:{admin}/readyz")).await;
    Gateway {
        child,
        ingress,
        _dir: dir,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let c: usize = std::env::var("BENCH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(c)
        .build()
        .unwrap();

    let rust = rust_echo().await;
    let py_port = free_port();
    let mut python = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/functions/echo.py"
        ))
        .env("PORT", py_port.to_string())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    println!(
        "switchyard benchmark: {n} requests, {c} concurrent clients, {} cores",
        std::thread::available_parallelism()
            .map(|p| p.get())
            .unwrap_or(1)
    );
    println!();
    println!("| function | output | direct req/s | via switchyard req/s | ratio | direct p50 / p99 ms | switchyard p50 / p99 ms | added p50 ms | errors | gateway peak RSS MiB |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut json = Vec::new();
    for (fname, url, requests) in [
        ("rust echo (in-process)", format!("http://{rust}/"), n),
        (
            "python echo.py",
            format!("http://127.0.0.1:{py_port}/"),
            n / 4,
        ),
    ] {
        // Warm up, then measure the function alone.
        load(&client, &url, true, 500.min(requests), c).await;
        let direct = load(&client, &url, true, requests, c).await;
        for output in ["stdout", "directory"] {
            let g = start_gateway(&client, &url, output).await;
            let ingress = format!("http://127.0.0.1:{}/in", g.ingress);
            load(&client, &ingress, false, 500.min(requests), c).await;
            let via = load(&client, &ingress, false, requests, c).await;
            let pid = g.child.id();
            let hwm = mem_mib(pid, "VmHWM:");
            let rss = mem_mib(pid, "VmRSS:");
            let mut child = g.child;
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM);
            }
            let _ = child.wait();
            println!(
                "| {fname} | {output} | {:.0} | {:.0} | {:.2} | {} / {} | {} / {} | {} | {} | {hwm:.1} (now {rss:.1}) |",
                direct.rps,
                via.rps,
                via.rps / direct.rps,
                ms(direct.p50),
                ms(direct.p99),
                ms(via.p50),
                ms(via.p99),
                ms(via.p50.saturating_sub(direct.p50)),
                direct.errors + via.errors,
            );
            json.push(serde_json::json!({
                "function": fname, "output": output, "requests": requests, "concurrency": c,
                "direct": { "rps": direct.rps, "p50_ms": direct.p50.as_secs_f64() * 1e3, "p99_ms": direct.p99.as_secs_f64() * 1e3, "errors": direct.errors },
                "switchyard": { "rps": via.rps, "p50_ms": via.p50.as_secs_f64() * 1e3, "p99_ms": via.p99.as_secs_f64() * 1e3, "errors": via.errors },
                "ratio": via.rps / direct.rps,
                "gateway_peak_rss_mib": hwm,
            }));
        }
    }
    let _ = python.kill();
    let _ = python.wait();
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("http_pipeline.json"),
        serde_json::to_string_pretty(&json).unwrap(),
    )
    .unwrap();
    println!();
    println!("written to target/bench/http_pipeline.json");
}
