//! End to end on the Azure Storage emulator (Azurite): the real binary, a real function process,
//! queues and blobs written and read with the official SDK crates.

mod common;

use common::azure::*;
use common::rabbitmq::distinct_and_duplicates;
use common::*;
use std::collections::HashMap;
use std::time::Duration;

fn queue_to_blob_yaml(input: &str, container: &str, extra: &str) -> String {
    let batch = if extra.contains("batch_size") {
        ""
    } else {
        ", batch_size: 32"
    };
    format!(
        "
functions:
  f: {{ command: [python3, \"{{testfn}}\"], timeout: 5s, concurrency: 32 }}
pipelines:
  q:
    trigger: {{ type: azure_queue, connection_string: \"{CONN}\", queue: {input}, max_polling_interval: 500ms{batch}{extra} }}
    function: f
    retry: {{ max_attempts: 1 }}
    outputs:
      - {{ name: blobs, type: azure_blob, connection_string: \"{CONN}\", container: {container}, path: \"out/{{id}}.json\" }}
"
    )
}

/// Wait (5 s at most) for the queue's approximate count to reach 0; on timeout, fail with the
/// gateway's log.
async fn wait_empty(q: &azure_storage_queue::QueueClient, g: &Gateway) {
    let mut left = -1;
    for _ in 0..50 {
        left = count(q).await;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, 0, "queue empty; gateway log:\n{}", g.log());
}

/// Wait for `n` blobs under `out/`; on timeout, fail with the gateway's log.
async fn wait_blobs(c: &azure_storage_blob::BlobContainerClient, n: usize, secs: u64, g: &Gateway) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let have = list(c, "out/").await.len();
        if have >= n {
            return;
        }
        if std::time::Instant::now() > deadline {
            panic!("timed out: {have} of {n} blobs; gateway log:\n{}", g.log());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The `n` of every blob under `out/`.
async fn blob_ns(c: &azure_storage_blob::BlobContainerClient) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for name in list(c, "out/").await {
        out.push(read_blob_json(c, &name).await);
    }
    out
}

#[tokio::test]
async fn thousand_queue_messages_become_blobs_none_lost_queue_empty() {
    const N: usize = 1000;
    let (input, container) = (az_name("in"), az_name("out"));
    let q = create_queue(&input).await;
    let c = create_container(&container).await;
    put_json(&q, values(N, serde_json::json!({}))).await;
    let g = Gateway::start(&queue_to_blob_yaml(&input, &container, "")).await;
    wait_blobs(&c, N, 180, &g).await;
    let blobs = blob_ns(&c).await;
    assert_eq!(blobs.len(), N, "one blob per message id");
    assert_eq!(
        distinct_and_duplicates(&blobs, "n").0,
        N,
        "every message has its blob"
    );
    // Every message was deleted after delivery: the queue ends empty (the approximate count
    // catches up with deletes at once on the emulator).
    wait_empty(&q, &g).await;
    let calls = g.function_log().len();
    assert!(calls >= N, "the function saw every message ({calls} calls)");
    let first = &g.function_log()[0]["headers"];
    assert_eq!(first["ce-type"], "switchyard.azure_queue.message");
    assert_eq!(first["ce-dequeuecount"], "1");
    assert!(first["ce-time"].as_str().unwrap().starts_with("20"));
    assert!(!first["ce-id"].as_str().unwrap().is_empty());
    assert_eq!(
        first["ce-source"],
        format!("switchyard/q/azure_queue/{input}")
    );
}

/// A container deleted under a running blob output is made again by the next write, each
/// time (the output once made it only on the first write that missed it).
#[tokio::test]
async fn a_container_deleted_twice_under_a_blob_output_is_made_again() {
    let (input, container) = (az_name("in"), az_name("out"));
    let q = create_queue(&input).await;
    let c = create_container(&container).await;
    let g = Gateway::start(&queue_to_blob_yaml(&input, &container, "")).await;
    for n in 0..3 {
        if n > 0 {
            c.delete(None).await.unwrap();
        }
        put_json(&q, vec![serde_json::json!({ "n": n })]).await;
        // The gateway makes the container again with its write.
        let mut made = false;
        for _ in 0..300 {
            if c.get_properties(None).await.is_ok() {
                made = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(made, "container {n} made again; gateway log:\n{}", g.log());
        wait_blobs(&c, 1, 30, &g).await;
        let blobs = blob_ns(&c).await;
        assert_eq!(blobs.len(), 1, "the container holds this write's blob only");
        assert_eq!(blobs[0]["n"], n);
    }
    // Each message was deleted after its write: none is left for a redelivery.
    wait_empty(&q, &g).await;
}

#[tokio::test]
async fn a_rejected_message_lands_in_the_poison_queue_after_max_dequeue_count() {
    let (input, container) = (az_name("in"), az_name("out"));
    let q = create_queue(&input).await;
    let c = create_container(&container).await;
    let mut vals = values(10, serde_json::json!({}));
    vals[4]["status"] = 400.into();
    put_json(&q, vals).await;
    // Bad input: text that is not base64 goes straight to the poison queue, uncalled.
    put_text(&q, vec!["this is { not base64 ]".into()]).await;
    let g = Gateway::start(&queue_to_blob_yaml(
        &input,
        &container,
        ", max_dequeue_count: 3",
    ))
    .await;
    let poison = queue_client(&format!("{input}-poison"));
    let texts = drain(&poison, 60, |v| v.len() >= 2).await;
    assert_eq!(texts.len(), 2, "two poison messages: {texts:?}");
    assert!(
        texts.contains(&"this is { not base64 ]".to_string()),
        "the undecodable message, as it was: {texts:?}"
    );
    let rejected: Vec<_> = decode_json(
        &texts
            .iter()
            .filter(|t| !t.contains(' '))
            .cloned()
            .collect::<Vec<_>>(),
    );
    assert_eq!(rejected[0]["n"], 4);
    assert_eq!(rejected[0]["status"], 400);
    wait_blobs(&c, 9, 30, &g).await;
    let calls_for_4: Vec<_> = g
        .function_log()
        .into_iter()
        .filter(|e| {
            serde_json::from_str::<serde_json::Value>(e["body"].as_str().unwrap_or(""))
                .map(|b| b["n"] == 4)
                .unwrap_or(false)
        })
        .collect();
    let counts: Vec<_> = calls_for_4
        .iter()
        .map(|e| {
            e["headers"]["ce-dequeuecount"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        counts,
        ["1", "2", "3"],
        "called once per dequeue, up to max_dequeue_count"
    );
    assert_eq!(
        g.metric(
            "switchyard_trigger_rejected_total",
            &[(
                "reason",
                "message text is not base64 (set encoding: none for plain text)"
            )]
        )
        .await,
        1.0
    );
    assert_eq!(count(&q).await, 0, "nothing left in the input queue");
}

#[tokio::test]
async fn sigkill_mid_stream_then_restart_loses_no_queue_message() {
    const N: usize = 600;
    let (input, container) = (az_name("in"), az_name("out"));
    let q = create_queue(&input).await;
    let c = create_container(&container).await;
    put_json(&q, values(N, serde_json::json!({ "sleep_ms": 5 }))).await;
    // A short visibility timeout so messages held by the killed gateway come back quickly.
    let mut g = Gateway::start(&queue_to_blob_yaml(
        &input,
        &container,
        ", visibility_timeout: 3s",
    ))
    .await;
    eventually(60, "some messages delivered", || {
        g.function_log().len() >= 100
    })
    .await;
    let st = g.signal_and_wait(libc::SIGKILL);
    assert!(!st.success());
    let before = list(&c, "out/").await.len();
    assert!(before < N, "killed mid-stream ({before} of {N} done)");
    g.spawn();
    g.wait_ready().await;
    wait_blobs(&c, N, 120, &g).await;
    assert_eq!(distinct_and_duplicates(&blob_ns(&c).await, "n").0, N);
    let calls = g.function_log().len();
    assert!(
        calls <= N + 48,
        "repeats bounded by the in-flight window (batch_size * 1.5): {calls} calls for {N}"
    );
}

fn blob_to_queue_yaml(container: &str, output: &str) -> String {
    format!(
        "
functions:
  f: {{ command: [python3, \"{{testfn}}\"], timeout: 5s, concurrency: 16 }}
pipelines:
  b:
    trigger: {{ type: azure_blob, connection_string: \"{CONN}\", container: {container}, prefix: \"in/\", pattern: \"{{name}}.json\", poll_interval: 300ms, page_size: 50 }}
    function: f
    retry: {{ max_attempts: 2, initial_delay: 20ms }}
    outputs:
      - {{ name: q, type: azure_queue, connection_string: \"{CONN}\", queue: {output} }}
"
    )
}

fn blobs(
    range: std::ops::Range<usize>,
    extra: serde_json::Value,
) -> Vec<(String, serde_json::Value)> {
    range
        .map(|i| {
            let mut v = extra.clone();
            v["n"] = i.into();
            (format!("in/{i:04}.json"), v)
        })
        .collect()
}

#[tokio::test]
async fn blobs_are_delivered_once_across_restarts_and_again_when_changed() {
    const N: usize = 200;
    let (container, output) = (az_name("blobs"), az_name("out"));
    let c = create_container(&container).await;
    upload_json(&c, blobs(0..N, serde_json::json!({}))).await;
    // Not matched by prefix or pattern: never delivered.
    upload_json(
        &c,
        vec![
            ("other/1.json".into(), serde_json::json!({"n": -1})),
            ("in/skip.txt".into(), serde_json::json!({"n": -2})),
        ],
    )
    .await;
    let out = queue_client(&output);
    let mut g = Gateway::start(&blob_to_queue_yaml(&container, &output)).await;
    let got = decode_json(&drain(&out, 120, |v| v.len() >= N).await);
    let (distinct, dups) = distinct_and_duplicates(&got, "n");
    assert_eq!((distinct, dups), (N, 0), "each blob exactly once");
    assert!(got.iter().all(|v| v["n"].as_i64().unwrap() >= 0));
    let log = g.function_log();
    assert_eq!(log.len(), N, "the function was called once per blob");
    let h = &log[0]["headers"];
    assert_eq!(h["ce-type"], "switchyard.azure_blob.created");
    let subject = h["ce-subject"].as_str().unwrap();
    assert!(subject.starts_with("in/") && subject.ends_with(".json"));
    assert!(h["ce-id"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{subject}@")));
    assert!(h["ce-bloburl"].as_str().unwrap().ends_with(subject));

    // A restart delivers nothing again (receipts live in the account).
    assert!(g.signal_and_wait(libc::SIGTERM).success());
    g.spawn();
    g.wait_ready().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        g.function_log().len(),
        N,
        "nothing delivered again after the restart"
    );

    // A changed blob (new ETag) is delivered again, once.
    upload_json(
        &c,
        vec![("in/0005.json".into(), serde_json::json!({"n": 5, "v": 2}))],
    )
    .await;
    let again = decode_json(&drain(&out, 30, |v| !v.is_empty()).await);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["n"], 5);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(g.function_log().len(), N + 1);
    assert!(drain(&out, 1, |v| !v.is_empty()).await.is_empty());
}

#[tokio::test]
async fn two_instances_deliver_each_blob_once_between_them() {
    const N: usize = 150;
    let (container, output) = (az_name("blobs"), az_name("out"));
    let c = create_container(&container).await;
    let yaml = blob_to_queue_yaml(&container, &output);
    // Both run before the blobs arrive, so neither has the container to itself by timing.
    let a = Gateway::start(&yaml).await;
    let b = Gateway::start(&yaml).await;
    upload_json(&c, blobs(0..N, serde_json::json!({ "sleep_ms": 10 }))).await;
    let out = queue_client(&output);
    let got = decode_json(&drain(&out, 120, |v| v.len() >= N).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let extra = drain(&out, 1, |v| !v.is_empty()).await;
    assert!(extra.is_empty(), "no blob delivered twice: {extra:?}");
    assert_eq!(distinct_and_duplicates(&got, "n"), (N, 0));
    let (ca, cb) = (a.function_log().len(), b.function_log().len());
    assert_eq!(ca + cb, N, "{ca} + {cb} calls: each blob once between them");
}

#[tokio::test]
async fn sigkill_mid_scan_then_restart_loses_no_blob_and_poison_gets_the_failures() {
    const N: usize = 120;
    let (container, output) = (az_name("blobs"), az_name("out"));
    let c = create_container(&container).await;
    let mut vals = blobs(0..N, serde_json::json!({ "sleep_ms": 20 }));
    vals[7].1["status"] = 400.into();
    upload_json(&c, vals).await;
    let yaml = blob_to_queue_yaml(&container, &output)
        .replace("page_size: 50", "page_size: 50, poison_queue: POISON");
    let poison_name = az_name("poison");
    let mut g = Gateway::start(&yaml.replace("POISON", &poison_name)).await;
    eventually(60, "some blobs delivered", || g.function_log().len() >= 30).await;
    assert!(!g.signal_and_wait(libc::SIGKILL).success());
    // The killed instance's scan lease lapses (15 s); the restarted one takes over.
    g.spawn();
    g.wait_ready().await;
    let out = queue_client(&output);
    let got = decode_json(
        &drain(&out, 120, |v| {
            distinct_and_duplicates(&decode_json(v), "n").0 >= N - 1
        })
        .await,
    );
    assert_eq!(
        distinct_and_duplicates(&got, "n").0,
        N - 1,
        "every good blob delivered"
    );
    let poison = decode_json(&drain(&queue_client(&poison_name), 30, |v| !v.is_empty()).await);
    assert_eq!(poison.len(), 1);
    assert_eq!(poison[0]["BlobName"], "in/0007.json");
    assert_eq!(poison[0]["ContainerName"], container);
    let calls: HashMap<String, usize> = g.function_log().iter().fold(HashMap::new(), |mut m, e| {
        *m.entry(e["headers"]["ce-subject"].as_str().unwrap().to_string())
            .or_default() += 1;
        m
    });
    assert_eq!(calls.len(), N, "every blob reached the function");
}

#[tokio::test]
async fn long_calls_keep_the_message_invisible_and_the_backlog_is_reported() {
    let (input, container) = (az_name("in"), az_name("out"));
    let q = create_queue(&input).await;
    let c = create_container(&container).await;
    // One message the function works on for 4 s, behind a 2 s visibility timeout, then a backlog
    // that batch_size 2 works through slowly (3 held at once, so a message that became visible again would be received again).
    put_json(&q, vec![serde_json::json!({"n": 0, "sleep_ms": 4000})]).await;
    put_json(
        &q,
        values(40, serde_json::json!({"sleep_ms": 50}))[1..].to_vec(),
    )
    .await;
    let g = Gateway::start(&queue_to_blob_yaml(
        &input,
        &container,
        ", visibility_timeout: 2s, batch_size: 2",
    ))
    .await;
    // The backlog gauge is the queue's approximate count, read at start and every 10 s.
    let mut backlog = 0.0;
    for _ in 0..40 {
        backlog = g
            .metric("switchyard_trigger_backlog", &[("pipeline", "q")])
            .await;
        if backlog > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(backlog >= 30.0, "backlog gauge near 40, got {backlog}");
    wait_blobs(&c, 40, 60, &g).await;
    let slow_calls = g
        .function_log()
        .iter()
        .filter(|e| {
            e["body"]
                .as_str()
                .unwrap_or("")
                .contains("\"sleep_ms\":4000")
        })
        .count();
    assert_eq!(
        slow_calls, 1,
        "a 4 s call behind a 2 s visibility timeout is not delivered twice"
    );
}

#[tokio::test]
async fn output_faults_a_refused_key_is_dead_lettered_and_a_deleted_queue_is_recreated() {
    let output = az_name("gone");
    let q = create_queue(&output).await;
    // `p` writes with the emulator's account; `denied` with a key the service refuses (403), as
    // with missing permissions.
    let yaml = format!(
        "
functions:
  f: {{ command: [python3, \"{{testfn}}\"], timeout: 5s }}
pipelines:
  p:
    trigger: {{ type: http, path: /in, response: accepted }}
    function: f
    retry: {{ max_attempts: 3, backoff: fixed, initial_delay: 50ms }}
    dead_letter: {{ type: directory, path: \"{{dir}}/dead/{{id}}.json\" }}
    outputs:
      - {{ name: q, type: azure_queue, connection_string: \"{CONN}\", queue: {output} }}
  denied:
    trigger: {{ type: http, path: /denied, response: accepted }}
    function: f
    retry: {{ max_attempts: 3, backoff: fixed, initial_delay: 50ms }}
    dead_letter: {{ type: directory, path: \"{{dir}}/dead/{{id}}.json\" }}
    outputs:
      - {{ name: q, type: azure_queue, queue: {output}, connection_string: \"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=d3JvbmcgYWNjb3VudCBrZXkgZm9yIHRoZSB0ZXN0;QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1\" }}
"
    );
    let g = Gateway::spawn_in(tempfile::tempdir().unwrap(), &yaml);
    // Ready but for the refused output, which /readyz names.
    let mut body = serde_json::Value::Null;
    for _ in 0..300 {
        if let Ok(r) = g.client.get(g.admin_url("/readyz")).send().await {
            body = r.json().await.unwrap_or_default();
            let keys: Vec<_> = body["not_ready"]
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            if keys == ["pipelines.denied.outputs.q"] {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        body["not_ready"]["pipelines.denied.outputs.q"]
            .as_str()
            .is_some_and(|r| r.contains("403")),
        "{body}"
    );
    let id_of = |reply: &str| {
        serde_json::from_str::<serde_json::Value>(reply).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (status, reply) = g.post("/denied", r#"{"n":9}"#).await;
    assert_eq!(status, 202);
    let dead = g.path(&format!("dead/{}.json", id_of(&reply)));
    eventually(30, "dead letter", || dead.exists()).await;
    let v = common::read_json(&dead);
    assert_eq!(v["switchyarderrorcode"], "403");
    assert_eq!(
        v["switchyardattempts"], "1",
        "403 is outside retry_on: dead-lettered without a retry"
    );
    assert_eq!(v["data"]["n"], 9);

    // A queue deleted under a running output is created again on the next write (as Azure
    // Functions' queue output does), so nothing is lost.
    let (status, _) = g.post("/in", r#"{"n":1}"#).await;
    assert_eq!(status, 202);
    assert_eq!(drain(&q, 10, |v| !v.is_empty()).await.len(), 1);
    // Each time, not only the first: every write that finds the queue missing creates it.
    for (n, what) in [(2, "created again"), (3, "created a second time")] {
        q.delete(None).await.unwrap();
        let (status, _) = g.post("/in", format!(r#"{{"n":{n}}}"#)).await;
        assert_eq!(status, 202);
        let written = decode_json(&drain(&q, 20, |v| !v.is_empty()).await);
        assert_eq!(written.len(), 1, "written to the queue {what}");
        assert_eq!(written[0]["n"], n);
    }
    assert_eq!(
        std::fs::read_dir(g.path("dead")).unwrap().count(),
        1,
        "only the refused write was dead-lettered"
    );
}

/// Blob names may be 1,024 characters, and a blob's id is `name@etag`; an AMQP message-id and
/// routing key hold at most 255 bytes. The id is shortened on the way out (the whole id stays in
/// `cloudEvents:id`); a routing key that long is a write error for the dead letter. Neither may
/// stop the gateway.
#[tokio::test]
async fn a_blob_name_longer_than_amqp_allows_reaches_rabbitmq_or_its_dead_letter() {
    use common::rabbitmq::{self as rmq, consume_with_properties};
    use lapin::types::{AMQPValue, FieldTable};
    let (ids, keys) = (az_name("longid"), az_name("longkey"));
    let (out, dead) = (
        common::kafka::unique("long-out"),
        common::kafka::unique("long-dead"),
    );
    rmq::declare(&out, FieldTable::default()).await;
    rmq::declare(&dead, FieldTable::default()).await;
    let long = format!("in/{}.json", "x".repeat(300));
    upload_json(
        &create_container(&ids).await,
        vec![
            (long.clone(), serde_json::json!({ "n": 0 })),
            ("in/short.json".into(), serde_json::json!({ "n": 1 })),
        ],
    )
    .await;
    upload_json(
        &create_container(&keys).await,
        vec![(long.clone(), serde_json::json!({ "n": 2 }))],
    )
    .await;
    let url = rmq::URL;
    let mut g = Gateway::start(&format!(
        "
functions:
  f: {{ command: [python3, \"{{testfn}}\"], timeout: 5s, concurrency: 4 }}
pipelines:
  ids:
    trigger: {{ type: azure_blob, connection_string: \"{CONN}\", container: {ids}, prefix: \"in/\", poll_interval: 300ms }}
    function: f
    outputs:
      - {{ name: q, type: rabbitmq, url: \"{url}\", routing_key: {out} }}
  keys:
    trigger: {{ type: azure_blob, connection_string: \"{CONN}\", container: {keys}, prefix: \"in/\", poll_interval: 300ms }}
    function: f
    retry: {{ max_attempts: 3, initial_delay: 20ms }}
    dead_letter: {{ type: rabbitmq, url: \"{url}\", routing_key: {dead} }}
    outputs:
      - {{ name: q, type: rabbitmq, url: \"{url}\", routing_key: \"{{subject}}\" }}
"
    ))
    .await;
    let header = |p: &lapin::BasicProperties, k: &str| match p
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(k).cloned())
    {
        Some(AMQPValue::LongString(s)) => String::from_utf8(s.as_bytes().to_vec()).unwrap(),
        other => panic!("header {k}: {other:?}"),
    };
    let message_id = |p: &lapin::BasicProperties| p.message_id().as_ref().unwrap().to_string();

    let got = consume_with_properties(&out, 2, Duration::from_secs(60)).await;
    assert_eq!(got.len(), 2, "both blobs written; log:\n{}", g.log());
    for (props, body) in &got {
        let (id, mid) = (header(props, "cloudEvents:id"), message_id(props));
        if body["n"] == 0 {
            assert!(id.starts_with(&format!("{long}@")), "the whole id: {id}");
            assert!(mid.len() <= 255, "message-id of {} bytes", mid.len());
            assert!(
                mid.starts_with("in/xxx") && mid != id,
                "shortened, readable: {mid}"
            );
        } else {
            assert_eq!(body["n"], 1);
            assert_eq!(mid, id, "a short id is the message-id as it is");
        }
    }

    let dl = consume_with_properties(&dead, 1, Duration::from_secs(60)).await;
    assert_eq!(
        dl.len(),
        1,
        "the long routing key dead-lettered; log:\n{}",
        g.log()
    );
    let (props, body) = &dl[0];
    assert_eq!(body["switchyarderrorcode"], "invalid");
    assert_eq!(body["data"], r#"{"n":2}"#, "{body}");
    assert!(
        body["switchyarderror"]
            .as_str()
            .unwrap()
            .ends_with("the routing key is 308 bytes; AMQP allows at most 255"),
        "{body}"
    );
    assert!(message_id(props).len() <= 255);
    assert!(
        g.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the gateway still runs; log:\n{}",
        g.log()
    );
    assert_eq!(
        g.metric(
            "switchyard_outputs_total",
            &[("pipeline", "keys"), ("output", "q"), ("outcome", "failed")]
        )
        .await,
        1.0,
        "an invalid write is not retried"
    );
}
