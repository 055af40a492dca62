//! Bad input at every edge: functions that misbehave, replies that make no sense, hostile data
//! and template values, and secrets that must never leak. Each case ends counted, in the dead
//! letter or delivered, never lost and never acknowledged early.

mod common;

use common::*;

fn pipeline(format: &str, extra_fn: &str, out_path: &str) -> String {
    format!(
        "
functions:
  f:
    command: [python3, \"{{testfn}}\"]
    timeout: 1s
    concurrency: 8
    format: {format}
{extra_fn}
pipelines:
  p:
    trigger: {{ type: http, path: /in, response: accepted }}
    function: f
    retry: {{ max_attempts: 2, backoff: fixed, initial_delay: 20ms }}
    dead_letter: {{ type: directory, path: \"{{dir}}/dead/{{id}}.json\" }}
    outputs:
      - name: files
        type: directory
        path: \"{{dir}}/out/{out_path}\"
"
    )
}

async fn send_raw(g: &Gateway, content_type: &str, body: Vec<u8>) -> String {
    let r = g
        .client
        .post(g.ingress_url("/in"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let v: serde_json::Value = r.json().await.unwrap();
    v["id"].as_str().unwrap().to_string()
}

async fn dead_code(g: &Gateway, id: &str) -> (String, String) {
    let dead = g.path(&format!("dead/{id}.json"));
    eventually(30, &format!("dead letter of {id}"), || dead.exists()).await;
    let v = read_json(&dead);
    (
        v["switchyarderrorcode"].as_str().unwrap().to_string(),
        v["switchyardattempts"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn misbehaving_functions_end_in_the_dead_letter_with_the_reason() {
    let g = Gateway::start(&pipeline(
        "cloudevents",
        "    max_reply: 64KiB",
        "{id}.json",
    ))
    .await;
    let json = "application/json";
    let hang = send_raw(&g, json, br#"{"n":1,"hang":true}"#.to_vec()).await;
    let close = send_raw(&g, json, br#"{"n":2,"close_mid":true}"#.to_vec()).await;
    let huge = send_raw(&g, json, br#"{"n":3,"huge_reply":200000}"#.to_vec()).await;
    let e5xx = send_raw(&g, json, br#"{"n":4,"status":502}"#.to_vec()).await;
    let ok = send_raw(&g, json, br#"{"n":5}"#.to_vec()).await;
    assert_eq!(dead_code(&g, &hang).await, ("timeout".into(), "2".into()));
    let (code, attempts) = dead_code(&g, &close).await;
    assert_eq!(attempts, "2", "a cut-off answer is retried");
    assert!(
        code == "connection" || code == "bad_reply",
        "a cut-off answer is a connection or reply error, got {code}"
    );
    // A reply over max_reply would be too large again: refused at once, not retried.
    assert_eq!(dead_code(&g, &huge).await, ("refused".into(), "1".into()));
    assert_eq!(dead_code(&g, &e5xx).await, ("502".into(), "2".into()));
    eventually(10, "the good event's output", || {
        g.path(&format!("out/{ok}.json")).exists()
    })
    .await;
    // Nothing of the failures reached the output; the gateway is still ready.
    assert_eq!(files_in(&g.path("out")).len(), 1);
    assert_eq!(
        g.client
            .get(g.admin_url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn nonsense_replies_in_the_azure_functions_format_are_dead_lettered() {
    let g = Gateway::start(&pipeline("azure-functions", "", "{id}.json")).await;
    let json = "application/json";
    let html = send_raw(&g, json, br#"{"n":1,"reply_type":"text/html"}"#.to_vec()).await;
    let unknown = send_raw(&g, json, br#"{"n":2,"unknown_output":true}"#.to_vec()).await;
    let (code, _) = dead_code(&g, &html).await;
    assert_eq!(code, "bad_reply", "HTML where the protocol wants JSON");
    // Outputs naming no configured output: nothing would be written, which must not count as
    // delivered silently.
    let (code, attempts) = dead_code(&g, &unknown).await;
    assert_eq!((code.as_str(), attempts.as_str()), ("refused", "1"));
    assert!(files_in(&g.path("out")).is_empty());
}

#[tokio::test]
async fn hostile_data_is_delivered_as_bytes_and_template_values_stay_inside() {
    // Binary-mode CloudEvents carry data as bytes: invalid UTF-8, an empty body and text
    // declared as JSON all reach the function unchanged.
    let g = Gateway::start(&pipeline("cloudevents", "", "{subject}-{id}.json")).await;
    let bad_utf8 = send_raw(&g, "application/json", vec![b'{', 0xff, 0xfe, b'}']).await;
    let empty = send_raw(&g, "application/json", Vec::new()).await;
    let not_json = send_raw(&g, "application/json", b"not json at all".to_vec()).await;
    // A function reply whose subject tries to climb out of the output folder.
    let climb = send_raw(
        &g,
        "application/json",
        br#"{"n":9,"reply_subject":"../../../etc/passwd"}"#.to_vec(),
    )
    .await;
    // Every file in out/, dot-files too (the climbing subject's file starts with a dot).
    let all = |g: &Gateway| -> Vec<String> {
        std::fs::read_dir(g.path("out"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.ends_with(".tmp"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while all(&g).len() < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "outputs {:?}, dead {:?}; log:\n{}",
            files_in(&g.path("out")),
            files_in(&g.path("dead")),
            g.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let names = all(&g);
    assert!(
        names.contains(&format!("_._.._.._etc_passwd-{climb}.json")),
        "the subject's slashes became underscores inside out/: {names:?}"
    );
    assert!(!g.path("etc").exists(), "nothing written beside out/");
    let bodies: Vec<Vec<u8>> = g
        .function_log()
        .iter()
        .filter(|r| {
            [&bad_utf8, &empty, &not_json]
                .iter()
                .any(|id| r["headers"]["ce-id"] == id.as_str())
        })
        .map(|r| r["body"].as_str().unwrap().as_bytes().to_vec())
        .collect();
    assert_eq!(bodies.len(), 3, "each called once");
    assert!(bodies.contains(&Vec::new()));
    assert!(bodies.contains(&b"not json at all".to_vec()));
}

#[tokio::test]
async fn secrets_never_appear_in_logs_metrics_readiness_or_errors() {
    // Every secret here is used where it can fail: a wrong RabbitMQ password, a made-up account
    // key the emulator refuses, a bearer token for an output that cannot be reached, signing
    // secrets that wrong signatures are checked against.
    let secrets = [
        ("RMQ_PASSWORD", "rmq-Pa55-4f1c9e"),
        ("AZ_KEY", "c3VwZXJzZWNyZXRrZXlmb3J0ZXN0czEyMzQ1Njc4OTA="),
        ("OUT_TOKEN", "tok-7d2a-91be-secret"),
        ("HMAC_SECRET", "hmac-3c3c-secret"),
        ("SLACK_SECRET", "slack-8e8e-secret"),
    ];
    let yaml = "
functions:
  f: { command: [python3, \"{testfn}\"], timeout: 2s }
pipelines:
  rabbit:
    trigger: { type: rabbitmq, url: \"amqp://guest:${RMQ_PASSWORD}@127.0.0.1:5672/%2f\", queue: nowhere }
    function: f
    outputs: [ { name: o, type: stdout } ]
  azure:
    trigger: { type: azure_queue, connection_string: \"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=${AZ_KEY};QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1\", queue: secrets-test }
    function: f
    outputs: [ { name: o, type: stdout } ]
  hooks:
    trigger: { type: http, path: /hook, hmac: { secret: \"${HMAC_SECRET}\", header: X-Sig } }
    function: f
    retry: { max_attempts: 2, initial_delay: 10ms }
    outputs:
      - { name: o, type: http, url: \"http://127.0.0.1:9/unreachable\", headers: { Authorization: \"Bearer ${OUT_TOKEN}\" } }
  slack:
    trigger: { type: slack, path: /slack, signing_secret: \"${SLACK_SECRET}\" }
    function: f
    outputs: [ { name: o, type: stdout } ]
";
    let g = Gateway::spawn_in_with_env(tempfile::tempdir().unwrap(), yaml, &secrets);
    // It never gets ready (RabbitMQ and Azure refuse it), which is the point: wait for the
    // ingress, then make every secret do its work.
    eventually(30, "ingress up", || {
        std::net::TcpStream::connect(("127.0.0.1", g.ingress)).is_ok()
    })
    .await;
    let _ = g
        .client
        .post(g.ingress_url("/hook"))
        .header("X-Sig", "sha256=00")
        .body("{}")
        .send()
        .await;
    let _ = g
        .client
        .post(g.ingress_url("/slack"))
        .header("X-Slack-Request-Timestamp", "1")
        .header("X-Slack-Signature", "v0=00")
        .body("{}")
        .send()
        .await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let readyz = g
        .client
        .get(g.admin_url("/readyz"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(readyz.contains("rabbit"), "{readyz}");
    let metrics = g.metrics().await;
    let validate = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["validate", "-c"])
        .arg(&g.config)
        .envs(secrets.iter().map(|(k, _)| (*k, "not-base64!")))
        .output()
        .unwrap();
    let validate_err = String::from_utf8_lossy(&validate.stderr).into_owned();
    assert!(!validate.status.success(), "a bad key is an error");
    let log = g.log();
    assert!(
        validate_err.contains("AccountKey is invalid"),
        "the bad-key case was exercised: {validate_err}"
    );
    assert!(log.contains("403"), "the refused key was exercised");
    for (name, value) in secrets {
        for (what, text) in [
            ("log", &log),
            ("/metrics", &metrics),
            ("/readyz", &readyz),
            ("validate", &validate_err),
        ] {
            assert!(!text.contains(value), "{name} appears in {what}");
        }
    }
    assert!(!validate_err.contains("not-base64!"));
}

#[tokio::test]
async fn an_output_that_refuses_writes_is_retried_then_dead_lettered_never_acked_early() {
    // The output's folder and the dead letter's folder are regular files: every write fails
    // (ENOTDIR), as with a full disk or missing permissions.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("in/.done")).unwrap();
    std::fs::create_dir_all(dir.path().join("in/.failed")).unwrap();
    std::fs::write(dir.path().join("blocked"), "not a folder").unwrap();
    std::fs::write(dir.path().join("blocked-dead"), "not a folder").unwrap();
    std::fs::write(dir.path().join("in/a.json"), r#"{"n":1}"#).unwrap();
    let yaml = "
functions:
  f: { command: [python3, \"{testfn}\"], timeout: 2s }
pipelines:
  p:
    trigger: { type: directory, path: \"{dir}/in\", poll_interval: 100ms }
    function: f
    retry: { max_attempts: 3, backoff: fixed, initial_delay: 50ms }
    dead_letter: { type: directory, path: \"{dir}/blocked-dead/{id}.json\" }
    outputs:
      - { name: out, type: directory, path: \"{dir}/blocked/out/{id}.json\" }
";
    let g = Gateway::spawn_in(dir, yaml);
    g.wait_ready().await;
    // Output and dead letter both refuse: the file is never acknowledged (stays in the inbox)
    // and is tried again.
    eventually(20, "output retries", || g.function_log().len() >= 2).await;
    assert!(
        g.path("in/a.json").exists(),
        "not acknowledged while nothing took it"
    );
    assert!(files_in(&g.path("in/.done")).is_empty() && files_in(&g.path("in/.failed")).is_empty());
    assert!(
        g.metric("switchyard_outputs_total", &[("outcome", "retry")])
            .await
            >= 2.0,
        "output writes were retried"
    );
    assert!(g.metric("switchyard_events_abandoned_total", &[]).await >= 1.0);
    // The dead letter's folder comes back: the event lands there (code io), then is acknowledged.
    std::fs::remove_file(g.path("blocked-dead")).unwrap();
    eventually(20, "dead letter", || {
        files_in(&g.path("blocked-dead")).len() == 1
    })
    .await;
    let dead = read_json(&files_in(&g.path("blocked-dead"))[0]);
    assert_eq!(dead["switchyarderrorcode"], "io");
    assert_eq!(dead["data"]["n"], 1);
    eventually(10, "acknowledged", || g.path("in/.done/a.json").exists()).await;
    // The output's folder comes back: the next file is written and acknowledged.
    std::fs::remove_file(g.path("blocked")).unwrap();
    std::fs::write(g.path("in/b.json"), r#"{"n":2}"#).unwrap();
    eventually(20, "output", || g.path("blocked/out/b.json.json").exists()).await;
    eventually(10, "acknowledged", || g.path("in/.done/b.json").exists()).await;
}

#[tokio::test]
async fn a_file_over_max_size_is_moved_aside_uncalled_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("in")).unwrap();
    std::fs::write(dir.path().join("in/big.json"), vec![b'x'; 4096]).unwrap();
    std::fs::write(dir.path().join("in/small.json"), r#"{"n":1}"#).unwrap();
    let yaml = "
functions:
  f: { command: [python3, \"{testfn}\"], timeout: 2s }
pipelines:
  p:
    trigger: { type: directory, path: \"{dir}/in\", poll_interval: 100ms, max_size: 1KiB }
    function: f
    outputs:
      - { name: out, type: directory, path: \"{dir}/out/{id}\" }
";
    let g = Gateway::spawn_in(dir, yaml);
    g.wait_ready().await;
    eventually(20, "big file moved aside", || {
        g.path("in/.failed/big.json").exists()
    })
    .await;
    eventually(20, "small file delivered", || {
        g.path("in/.done/small.json").exists()
    })
    .await;
    assert_eq!(
        g.function_log().len(),
        1,
        "only the small file reached the function"
    );
    assert_eq!(
        g.metric(
            "switchyard_trigger_rejected_total",
            &[("reason", "too large")]
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn idle_connections_are_cut_and_do_not_starve_real_clients() {
    let g = Gateway::start(&pipeline("cloudevents", "", "{id}.json")).await;
    let pid = g.child.as_ref().unwrap().id();
    let fds = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    let baseline = fds();
    // 200 clients that connect and never send a byte.
    let idle: Vec<_> = (0..200)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", g.ingress)).unwrap())
        .collect();
    // A real client still gets through.
    let started = std::time::Instant::now();
    let id = send_raw(&g, "application/json", br#"{"n":1}"#.to_vec()).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    eventually(10, "output", || g.path(&format!("out/{id}.json")).exists()).await;
    // The idle ones are cut after header_timeout (1 s here): the gateway's descriptors return
    // to where they were.
    eventually(10, "idle connections closed", || fds() <= baseline + 5).await;
    drop(idle);
}
