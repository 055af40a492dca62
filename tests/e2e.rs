//! End to end: the real release binary, a real Python function process, real files.

mod common;

use common::*;
use futures::future::join_all;
use std::time::Duration;

const FUNCTION: &str = "
functions:
  f:
    command: [python3, \"{testfn}\"]
    timeout: 5s
    concurrency: 8
";

fn http_pipeline(extra: &str) -> String {
    format!(
        "{FUNCTION}
pipelines:
  p:
    trigger: {{ type: http, path: /in, response: accepted }}
    function: f
    retry: {{ max_attempts: 3, backoff: fixed, initial_delay: 20ms }}
    dead_letter: {{ type: directory, path: \"{{dir}}/dead/{{id}}.json\" }}
    outputs:
      - name: files
        type: directory
        path: \"{{dir}}/out/{{id}}.json\"
{extra}"
    )
}

/// For each call the test function served, how many it was handling at once (its `active`).
fn calls_at_once(g: &Gateway) -> Vec<u64> {
    g.function_log()
        .iter()
        .map(|r| r["active"].as_u64().unwrap())
        .collect()
}

async fn send(g: &Gateway, body: serde_json::Value) -> String {
    let (status, reply) = g.post("/in", body.to_string()).await;
    assert_eq!(status, 202, "{reply}");
    serde_json::from_str::<serde_json::Value>(&reply).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Send every body at once; their ids, in order.
async fn send_all(g: &Gateway, bodies: impl Iterator<Item = serde_json::Value>) -> Vec<String> {
    join_all(bodies.map(|b| send(g, b))).await
}

fn attempts_for(g: &Gateway, id: &str) -> Vec<String> {
    g.function_log()
        .iter()
        .filter(|r| r["headers"]["ce-id"] == id)
        .map(|r| {
            r["headers"]["ce-deliveryattempt"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn n_events_in_n_outputs_none_lost() {
    let g = Gateway::start(&http_pipeline("")).await;
    const N: usize = 200;
    let ids = send_all(&g, (0..N).map(|n| serde_json::json!({ "n": n }))).await;
    let out = g.path("out");
    eventually(30, "all outputs written", || files_in(&out).len() == N).await;
    let mut seen: Vec<u64> = files_in(&out)
        .iter()
        .map(|p| read_json(p)["n"].as_u64().unwrap())
        .collect();
    seen.sort();
    assert_eq!(seen, (0..N as u64).collect::<Vec<_>>(), "every event once");
    for id in &ids {
        assert!(out.join(format!("{id}.json")).exists(), "output for {id}");
    }
    let m = g.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            "switchyard_events_received_total",
            &[("pipeline", "p"), ("trigger", "http")]
        ),
        N as f64
    );
    assert_eq!(
        metric_value(
            &m,
            "switchyard_invocations_total",
            &[("outcome", "success")]
        ),
        N as f64
    );
    assert_eq!(
        metric_value(
            &m,
            "switchyard_outputs_total",
            &[("output", "files"), ("outcome", "success")]
        ),
        N as f64
    );
    assert_eq!(metric_value(&m, "switchyard_dead_letters_total", &[]), 0.0);
    // Connections to the function are reused: far fewer client ports than calls.
    let ports: std::collections::HashSet<_> = g
        .function_log()
        .iter()
        .map(|r| r["port"].as_u64())
        .collect();
    assert!(
        ports.len() <= 16,
        "{} connections for {N} calls",
        ports.len()
    );
}

#[tokio::test]
async fn retries_count_delivery_attempts() {
    let g = Gateway::start(&http_pipeline("")).await;
    let id = send(&g, serde_json::json!({ "n": 1, "fail_until": 3 })).await;
    eventually(10, "output after retries", || {
        g.path(&format!("out/{id}.json")).exists()
    })
    .await;
    assert_eq!(attempts_for(&g, &id), ["1", "2", "3"]);
    assert_eq!(
        read_json(&g.path(&format!("out/{id}.json")))["attempt"],
        "3"
    );
    let m = g.metrics().await;
    assert_eq!(
        metric_value(&m, "switchyard_invocations_total", &[("outcome", "retry")]),
        2.0
    );
    assert_eq!(
        metric_value(
            &m,
            "switchyard_invocations_total",
            &[("outcome", "success")]
        ),
        1.0
    );
}

#[tokio::test]
async fn exhausted_retries_go_to_the_dead_letter() {
    let g = Gateway::start(&http_pipeline("")).await;
    let id = send(&g, serde_json::json!({ "n": 7, "fail_until": 99 })).await;
    let dead = g.path(&format!("dead/{id}.json"));
    eventually(10, "dead letter", || dead.exists()).await;
    let v = read_json(&dead);
    assert_eq!(v["switchyarderrorcode"], "503");
    assert_eq!(v["switchyardattempts"], "3");
    assert_eq!(v["data"]["n"], 7, "original data kept");
    assert!(switchyard_sdk::cloudevents::validate_json(&v).is_empty());
    assert_eq!(attempts_for(&g, &id), ["1", "2", "3"]);
    assert!(files_in(&g.path("out")).is_empty());
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let g = Gateway::start(&http_pipeline("")).await;
    let id = send(&g, serde_json::json!({ "n": 1, "retry_after": 2 })).await;
    eventually(10, "output", || g.path(&format!("out/{id}.json")).exists()).await;
    let times: Vec<f64> = g
        .function_log()
        .iter()
        .filter(|r| r["headers"]["ce-id"] == id.as_str())
        .map(|r| r["t"].as_f64().unwrap())
        .collect();
    assert_eq!(times.len(), 2);
    let gap = times[1] - times[0];
    // The backoff is 20 ms; Retry-After: 2 wins.
    assert!(gap >= 1.9, "second attempt after {gap:.3} s");
}

#[tokio::test]
async fn poison_event_is_dead_lettered_with_error_extensions() {
    let g = Gateway::start(&http_pipeline("")).await;
    let id = send(&g, serde_json::json!({ "n": 5, "status": 400 })).await;
    let dead = g.path(&format!("dead/{id}.json"));
    eventually(10, "dead letter", || dead.exists()).await;
    let v = read_json(&dead);
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["switchyarderrorcode"], "400");
    assert_eq!(v["switchyardattempts"], "1", "400 is not retried");
    assert!(v["switchyarderror"].as_str().unwrap().contains("400"));
    assert_eq!(v["data"], serde_json::json!({ "n": 5, "status": 400 }));
    assert_eq!(attempts_for(&g, &id), ["1"]);
    assert_eq!(
        g.metric("switchyard_dead_letters_total", &[("pipeline", "p")])
            .await,
        1.0
    );
}

#[tokio::test]
async fn binary_mode_cloudevents_are_valid() {
    let g = Gateway::start(&http_pipeline("")).await;
    let id = send(&g, serde_json::json!({ "n": 1 })).await;
    eventually(10, "output", || g.path(&format!("out/{id}.json")).exists()).await;
    let req = &g.function_log()[0];
    let h = req["headers"].as_object().unwrap();
    assert_eq!(h["ce-specversion"], "1.0");
    assert_eq!(h["ce-id"], id.as_str());
    assert_eq!(h["ce-source"], "switchyard/p/http/in");
    assert_eq!(h["ce-type"], "switchyard.http.request");
    assert!(chrono::DateTime::parse_from_rfc3339(h["ce-time"].as_str().unwrap()).is_ok());
    assert_eq!(h["content-type"], "application/json");
    for name in h.keys().filter_map(|k| k.strip_prefix("ce-")) {
        assert!(
            switchyard_sdk::event::is_valid_attribute_name(name),
            "bad attribute name {name}"
        );
    }
    let tp = h["traceparent"].as_str().unwrap();
    assert_eq!(h["ce-traceparent"].as_str(), Some(tp));
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(
        (parts[0], parts[1].len(), parts[2].len(), parts[3]),
        ("00", 32, 16, "01")
    );
}

#[tokio::test]
async fn structured_and_batch_modes() {
    let yaml = http_pipeline("")
        .replace(
            "timeout: 5s",
            "timeout: 5s\n    format: cloudevents-structured",
        )
        .replace(
            "function: f\n",
            "function: f\n    batch: { max_events: 4, max_wait: 300ms }\n",
        );
    let g = Gateway::start(&yaml).await;
    for n in 0..4 {
        send(&g, serde_json::json!({ "n": n })).await;
    }
    eventually(10, "a batch call", || !g.function_log().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = g.function_log();
    assert_eq!(log.len(), 1, "four events, one invocation");
    assert_eq!(
        log[0]["headers"]["content-type"],
        "application/cloudevents-batch+json"
    );
    let batch: Vec<serde_json::Value> =
        serde_json::from_str(log[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(batch.len(), 4);
    for e in &batch {
        assert!(
            switchyard_sdk::cloudevents::validate_json(e).is_empty(),
            "{e}"
        );
        assert_eq!(e["deliveryattempt"], "1");
    }
}

#[tokio::test]
async fn azure_functions_outputs_are_routed_by_name() {
    let yaml = format!(
        "{}
pipelines:
  p:
    trigger: {{ type: http, path: /in, response: sync }}
    function: f
    outputs:
      - {{ name: a, type: directory, path: \"{{dir}}/a/{{id}}.json\" }}
      - {{ name: b, type: directory, path: \"{{dir}}/b/{{id}}.txt\" }}
      - {{ name: $return, type: directory, path: \"{{dir}}/r/{{id}}.json\" }}
",
        FUNCTION.replace("timeout: 5s", "timeout: 5s\n    format: azure-functions")
    );
    let g = Gateway::start(&yaml).await;
    let (status, reply) = g.post("/in", r#"{"n": 42}"#).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&reply).unwrap()["to"],
        "return"
    );
    let a = files_in(&g.path("a"));
    let b = files_in(&g.path("b"));
    let r = files_in(&g.path("r"));
    assert_eq!((a.len(), b.len(), r.len()), (1, 1, 1));
    assert_eq!(read_json(&a[0]), serde_json::json!({ "n": 42, "to": "a" }));
    assert_eq!(std::fs::read_to_string(&b[0]).unwrap(), "text 42");
    assert_eq!(read_json(&r[0])["to"], "return");
    let req = &g.function_log()[0];
    assert_eq!(req["path"], "/p");
    let body: serde_json::Value = serde_json::from_str(req["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["Data"]["trigger"]["Method"], "POST");
    assert_eq!(body["Metadata"]["sys"]["MethodName"], "p");
    assert!(g.log().contains("handled n=42"), "function Logs are logged");
}

#[tokio::test]
async fn garbage_answers_are_retried_then_dead_lettered() {
    let yaml = http_pipeline("").replace("timeout: 5s", "timeout: 5s\n    format: azure-functions");
    let g = Gateway::start(&yaml).await;
    let id = send(&g, serde_json::json!({ "n": 3, "garbage": true })).await;
    let dead = g.path(&format!("dead/{id}.json"));
    eventually(10, "dead letter", || dead.exists()).await;
    let v = read_json(&dead);
    assert_eq!(v["switchyarderrorcode"], "bad_reply");
    assert_eq!(v["switchyardattempts"], "3");
    assert_eq!(g.function_log().len(), 3);
}

#[tokio::test]
async fn concurrency_bounds_the_calls_and_max_in_flight_the_events_held() {
    // concurrency 8 and 24 held: 8 are called at once, the others wait.
    let (calls, held) = calls_and_held_at_the_peak("    max_in_flight: 24\n").await;
    assert_eq!(
        calls, 8,
        "the function saw at most `concurrency` calls at once, and that many"
    );
    assert_eq!(held, 24.0, "`max_in_flight` events held at the peak");
}

#[tokio::test]
async fn a_pipeline_with_outputs_holds_twice_its_calls_by_default() {
    let (calls, held) = calls_and_held_at_the_peak("").await;
    assert_eq!(calls, 8, "`concurrency` calls at once at the peak");
    assert_eq!(held, 16.0, "twice `concurrency` held at the peak");
}

/// Sends 48 events whose calls take 200 ms each through the http pipeline (concurrency 8, one
/// file output) with `extra` in its config; the most calls the function saw at once and the
/// peak of the events held, sampled until every output is written.
async fn calls_and_held_at_the_peak(extra: &str) -> (u64, f64) {
    let g = Gateway::start(&http_pipeline(extra)).await;
    const N: usize = 48;
    let out = g.path("out");
    let watch = async {
        let mut held_max = 0f64;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while files_in(&out).len() < N {
            assert!(
                tokio::time::Instant::now() < deadline,
                "outputs: {} of {N}",
                files_in(&out).len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
            let held = g
                .metric("switchyard_events_in_flight", &[("pipeline", "p")])
                .await;
            held_max = held_max.max(held);
        }
        held_max
    };
    let bodies = (0..N).map(|n| serde_json::json!({ "n": n, "sleep_ms": 200 }));
    let (_, held_max) = tokio::join!(send_all(&g, bodies), watch);
    let active = calls_at_once(&g);
    assert_eq!(active.len(), N, "one call per event");
    (active.into_iter().max().unwrap_or(0), held_max)
}

#[tokio::test]
async fn a_log_written_to_a_file_has_no_colour_codes() {
    let g = Gateway::start(&http_pipeline("")).await;
    send(&g, serde_json::json!({ "n": 1 })).await;
    eventually(10, "the event written", || {
        files_in(&g.path("out")).len() == 1
    })
    .await;
    let log = g.log();
    assert!(log.contains(" INFO "), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "terminal escape codes in the log file:\n{log}"
    );
}

#[tokio::test]
async fn calls_go_on_while_output_writes_wait() {
    // A slow destination: each write takes 300 ms; it counts the writes it holds at once.
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::Arc;
    let (active, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (a, p) = (active.clone(), peak.clone());
    let app = axum::Router::new().route(
        "/slow",
        axum::routing::post(move || {
            let (a, p) = (a.clone(), p.clone());
            async move {
                p.fetch_max(a.fetch_add(1, SeqCst) + 1, SeqCst);
                tokio::time::sleep(Duration::from_millis(300)).await;
                a.fetch_sub(1, SeqCst);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let port = serve(app).await;
    // concurrency 8 (the function's), 32 held: a delivery whose call is done waits for its
    // write without holding one of the 8 calls.
    let g = Gateway::start(&http_pipeline(&format!(
        "      - {{ name: slow, type: http, url: \"http://127.0.0.1:{port}/slow\" }}\n    max_in_flight: 32\n"
    )))
    .await;
    const N: usize = 32;
    send_all(&g, (0..N).map(|n| serde_json::json!({ "n": n }))).await;
    eventually(20, "every event written", || {
        files_in(&g.path("out")).len() == N
    })
    .await;
    let calls = calls_at_once(&g);
    assert_eq!(calls.len(), N, "one call per event");
    assert!(
        calls.iter().all(|&c| c <= 8),
        "at most `concurrency` calls at once: {calls:?}"
    );
    // Held to its call slot until written, a delivery would let at most 8 writes wait at once.
    let peak = peak.load(SeqCst);
    assert!(
        peak > 8 && peak <= N,
        "writes waiting at once: {peak}, more than the 8 calls allowed"
    );
}

#[tokio::test]
async fn sigterm_drains_in_flight_events_and_exits_zero() {
    let mut g = Gateway::start(&http_pipeline("")).await;
    const N: usize = 24;
    for n in 0..N {
        send(&g, serde_json::json!({ "n": n, "sleep_ms": 250 })).await;
    }
    // 24 events at 250 ms with 8 at a time: about 750 ms of work is in flight now.
    let status = g.signal_and_wait(libc::SIGTERM);
    assert_eq!(status.code(), Some(0), "log:\n{}", g.log());
    assert_eq!(
        files_in(&g.path("out")).len(),
        N,
        "every accepted event finished before exit"
    );
    assert!(g.log().contains("draining"));
    assert_eq!(g.function_log().len(), N, "nothing delivered twice");
}

#[tokio::test]
async fn directory_trigger_moves_files_once_and_restart_repeats_nothing() {
    let yaml = format!(
        "{FUNCTION}
pipelines:
  files:
    trigger: {{ type: directory, path: \"{{dir}}/inbox\", pattern: \"*.json\", poll_interval: 50ms }}
    function: f
    outputs:
      - {{ name: out, type: directory, path: \"{{dir}}/out/{{id}}\" }}
"
    );
    let mut g = Gateway::start(&yaml).await;
    for n in 0..10 {
        std::fs::write(
            g.path(&format!("inbox/{n}.json")),
            format!("{{\"n\": {n}, \"sleep_ms\": 50}}"),
        )
        .unwrap();
    }
    std::fs::write(g.path("inbox/skip.txt"), "not matched").unwrap();
    let out = g.path("out");
    eventually(20, "ten outputs", || files_in(&out).len() == 10).await;
    eventually(5, "inputs moved to .done", || {
        files_in(&g.path("inbox/.done")).len() == 10
    })
    .await;
    assert_eq!(g.signal_and_wait(libc::SIGTERM).code(), Some(0));
    let calls = g.function_log().len();
    assert_eq!(calls, 10);
    // A restart after a clean drain delivers nothing again.
    g.spawn();
    g.wait_ready().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(g.function_log().len(), calls, "no duplicates after restart");
    assert_eq!(files_in(&g.path("inbox")), vec![g.path("inbox/skip.txt")]);
}

#[tokio::test]
async fn a_function_that_dies_mid_run_is_restarted_and_nothing_is_lost() {
    // A restart takes a few hundred milliseconds: a realistic backoff covers it.
    let yaml = http_pipeline("").replace(
        "max_attempts: 3, backoff: fixed, initial_delay: 20ms",
        "max_attempts: 8, backoff: exponential, initial_delay: 200ms, max_delay: 2s",
    );
    let g = Gateway::start(&yaml).await;
    let marker = g.path("crashed");
    const N: usize = 30;
    for n in 0..N {
        let mut ev = serde_json::json!({ "n": n, "sleep_ms": 20 });
        if n == 10 {
            ev["crash_marker"] = marker.display().to_string().into();
        }
        send(&g, ev).await;
    }
    let out = g.path("out");
    let done = tokio::time::timeout(Duration::from_secs(30), async {
        while files_in(&out).len() < N {
            tokio::time::sleep(Duration::from_millis(50)).await
        }
    })
    .await;
    assert!(
        done.is_ok(),
        "{} of {N} outputs; log:\n{}",
        files_in(&out).len(),
        g.log()
    );
    assert!(marker.exists(), "the function did crash");
    let pids: std::collections::HashSet<_> =
        g.function_log().iter().map(|r| r["pid"].as_u64()).collect();
    assert!(pids.len() >= 2, "a new process served after the crash");
    assert!(
        g.metric("switchyard_function_restarts_total", &[("function", "f")])
            .await
            >= 1.0
    );
    assert!(files_in(&g.path("dead")).is_empty());
}

#[tokio::test]
async fn http_trigger_refuses_bad_requests_and_counts_them() {
    let yaml = format!(
        "{FUNCTION}
pipelines:
  p:
    trigger:
      type: http
      path: /in
      hmac: {{ secret: \"It's a Secret to Everybody\", header: X-Hub-Signature-256 }}
    function: f
    outputs:
      - {{ name: out, type: stdout }}
"
    );
    let g = Gateway::start(&yaml).await;
    // Too large: the ingress allows 64 KiB.
    let (status, _) = g.post("/in", vec![b'x'; 100 * 1024]).await;
    assert_eq!(status, 413);
    // No signature, then a wrong one.
    assert_eq!(g.post("/in", "Hello, World!").await.0, 401);
    let r = g
        .client
        .post(g.ingress_url("/in"))
        .header("X-Hub-Signature-256", "sha256=0000")
        .body("Hello, World!")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // GitHub's documented example signature is accepted and answered synchronously.
    let r = g
        .client
        .post(g.ingress_url("/in"))
        .header(
            "X-Hub-Signature-256",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        )
        .body("Hello, World!")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let m = g.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            "switchyard_http_requests_rejected_total",
            &[("reason", "body too large")]
        ),
        1.0
    );
    assert_eq!(
        metric_value(
            &m,
            "switchyard_http_requests_rejected_total",
            &[("reason", "bad signature")]
        ),
        1.0
    );
    assert_eq!(
        metric_value(
            &m,
            "switchyard_http_requests_rejected_total",
            &[("reason", "missing signature")]
        ),
        1.0
    );
    assert_eq!(
        g.function_log().len(),
        1,
        "refused requests never reach the function"
    );
    let stdout = std::fs::read_to_string(g.path("stdout.jsonl")).unwrap();
    assert_eq!(stdout.lines().count(), 1, "one JSON line on stdout");
}

#[tokio::test]
async fn timer_fires_on_startup_with_the_scheduled_time_as_id() {
    let yaml = format!(
        "{FUNCTION}
pipelines:
  t:
    trigger: {{ type: timer, schedule: \"0 0 0 1 1 *\", run_on_startup: true }}
    function: f
    outputs:
      - {{ name: out, type: directory, path: \"{{dir}}/out/tick\" }}
"
    );
    let g = Gateway::start(&yaml).await;
    eventually(10, "startup tick", || g.path("out/tick").exists()).await;
    let req = &g.function_log()[0];
    assert_eq!(req["headers"]["ce-type"], "switchyard.timer.tick");
    let id = req["headers"]["ce-id"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(id).is_ok(), "{id}");
}

#[tokio::test]
async fn readyz_waits_for_the_function() {
    let yaml = format!(
        "
functions:
  remote:
    url: http://127.0.0.1:{}
pipelines:
  p:
    trigger: {{ type: http, path: /in }}
    function: remote
    outputs:
      - {{ name: out, type: stdout }}
",
        free_port()
    );
    let dir = tempfile::tempdir().unwrap();
    let g = Gateway::spawn_in(dir, &yaml);
    let mut body = serde_json::Value::Null;
    // Until the first probe of the function has run, the reason is "starting".
    eventually(10, "admin up and the function probed", || {
        let r = std::process::Command::new("curl")
            .args(["-s", &g.admin_url("/readyz")])
            .output()
            .unwrap();
        body = serde_json::from_slice(&r.stdout).unwrap_or_default();
        !body.is_null() && body["not_ready"]["functions.remote"] != "starting"
    })
    .await;
    assert_eq!(body["status"], "not ready");
    assert!(
        body["not_ready"]["functions.remote"]
            .as_str()
            .unwrap()
            .contains("cannot connect"),
        "{body}"
    );
    let r = g.client.get(g.admin_url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn azure_http_custom_handlers_answer_through_outputs_res() {
    let yaml = format!(
        "{}
pipelines:
  p:
    trigger: {{ type: http, path: /in, response: sync }}
    function: f
    outputs:
      - {{ name: out, type: stdout }}
",
        FUNCTION.replace("timeout: 5s", "timeout: 5s\n    format: azure-functions")
    );
    let g = Gateway::start(&yaml).await;
    let (status, reply) = g.post("/in", r#"{"n": 9, "http_res": true}"#).await;
    assert_eq!(status, 201, "{reply}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&reply).unwrap(),
        serde_json::json!({ "created": 9 })
    );
}

#[tokio::test]
async fn slow_clients_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let g = Gateway::start(&http_pipeline("")).await;
    // Headers that never finish: the connection is closed after header_timeout (1 s).
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", g.ingress))
        .await
        .unwrap();
    s.write_all(b"POST /in HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "connection still open after 5 s");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed after {:?}",
        started.elapsed()
    );
    // A body that never finishes: 408 after body_timeout (1 s).
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", g.ingress))
        .await
        .unwrap();
    s.write_all(b"POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"n\":")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert_eq!(
        g.metric(
            "switchyard_http_requests_rejected_total",
            &[("reason", "body too slow")]
        )
        .await,
        1.0
    );
    assert!(g.function_log().is_empty());
}

#[tokio::test]
async fn a_second_signal_exits_at_once() {
    let mut g = Gateway::start(&http_pipeline("")).await;
    send(&g, serde_json::json!({ "n": 1, "sleep_ms": 4000 })).await;
    eventually(5, "call in progress", || !g.function_log().is_empty()).await;
    let pid = g.child.as_ref().unwrap().id() as i32;
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let status = g.signal_and_wait(libc::SIGINT);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        status.code(),
        Some(1),
        "an interrupted drain is not a clean exit"
    );
    assert!(
        files_in(&g.path("out")).is_empty(),
        "the slow event was not finished, so not acknowledged"
    );
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let g = Gateway::start_with_env(&http_pipeline(""), &[("SWITCHYARD_LOG_FORMAT", "json")]).await;
    send(&g, serde_json::json!({ "n": 1 })).await;
    eventually(10, "output", || files_in(&g.path("out")).len() == 1).await;
    let log = g.log();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 3, "{log}");
    for l in lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{l}");
    }
}

/// An output's answer follows the pipeline's `retry_on` as the function's does: a 503 is
/// retried to `max_attempts`, a 400 goes to the dead letter after one try.
#[tokio::test]
async fn an_output_status_outside_retry_on_is_dead_lettered_at_once() {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    let calls: Arc<Mutex<HashMap<u64, usize>>> = Arc::default();
    let seen = calls.clone();
    // Answers by the value's n: 1 → 400, 2 → 503, else 204.
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| async move {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let n = v["n"].as_u64().unwrap();
            *seen.lock().unwrap().entry(n).or_default() += 1;
            match n {
                1 => axum::http::StatusCode::BAD_REQUEST,
                2 => axum::http::StatusCode::SERVICE_UNAVAILABLE,
                _ => axum::http::StatusCode::NO_CONTENT,
            }
        }),
    );
    let port = serve(app).await;
    let g = Gateway::start(&http_pipeline(&format!(
        "      - {{ name: hook, type: http, url: \"http://127.0.0.1:{port}/hook\" }}\n"
    )))
    .await;
    let mut ids = Vec::new();
    for n in 1..=3 {
        ids.push(send(&g, serde_json::json!({ "n": n })).await);
    }
    for (id, code, attempts) in [(&ids[0], "400", "1"), (&ids[1], "503", "3")] {
        let dead = g.path(&format!("dead/{id}.json"));
        eventually(10, "dead letter", || dead.exists()).await;
        let v = read_json(&dead);
        assert_eq!(v["switchyarderrorcode"], code, "{v}");
        assert_eq!(v["switchyardattempts"], attempts, "{v}");
        assert!(v["switchyarderror"]
            .as_str()
            .unwrap()
            .starts_with("output hook: destination answered"));
    }
    eventually(10, "third delivered", || {
        calls.lock().unwrap().get(&3) == Some(&1)
    })
    .await;
    assert!(!g.path(&format!("dead/{}.json", ids[2])).exists());
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls[&1], 1, "400 not retried");
    assert_eq!(calls[&2], 3, "503 retried to max_attempts");
}
