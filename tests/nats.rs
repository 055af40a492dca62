//! End to end with NATS JetStream and RabbitMQ: the real binary, real brokers, a real function.
//! RabbitMQ queue → function → JetStream, and JetStream → function → RabbitMQ.

mod common;

use common::kafka::unique;
use common::rabbitmq::{self as rmq, distinct_and_duplicates};
use common::*;
use lapin::types::FieldTable;
use std::time::Duration;

const FUNCTION: &str = "
functions:
  f: { command: [python3, \"{testfn}\"], timeout: 5s, concurrency: 16 }
";

/// JetStream stream `s` (subjects `s.>`) → function → RabbitMQ queue `out`.
fn js_to_rabbit(stream: &str, out: &str, dead: Option<&str>, max_attempts: u32) -> String {
    let dl = dead
        .map(|d| {
            format!(
                "    dead_letter: {{ type: rabbitmq, url: \"{}\", routing_key: {d} }}\n",
                rmq::URL
            )
        })
        .unwrap_or_default();
    format!(
        "{FUNCTION}
pipelines:
  j:
    trigger:
      type: nats
      url: \"{}\"
      jetstream: {{ stream: {stream}, durable: gw, ack_wait: 5s }}
    function: f
    retry: {{ max_attempts: {max_attempts}, backoff: exponential, initial_delay: 20ms, max_delay: 1s }}
{dl}    outputs:
      - {{ name: out, type: rabbitmq, url: \"{}\", routing_key: {out} }}
",
        common::nats::URL,
        rmq::URL
    )
}

async fn read_rabbit(queue: &str, n: usize, secs: u64) -> Vec<serde_json::Value> {
    rmq::consume_until(queue, Duration::from_secs(secs), |v| {
        distinct_and_duplicates(v, "n").0 >= n
    })
    .await
}

#[tokio::test]
async fn jetstream_to_rabbitmq_ten_thousand_with_random_failures() {
    const N: usize = 10_000;
    let (stream, out) = (unique("JS"), unique("out"));
    common::nats::create_stream(&stream).await;
    rmq::declare(&out, FieldTable::default()).await;
    common::nats::publish(
        &format!("{stream}.orders"),
        values(N, serde_json::json!({ "fail_rate": 0.2 })),
    )
    .await;
    let g = Gateway::start(&js_to_rabbit(&stream, &out, None, 12)).await;
    let got = read_rabbit(&out, N, 240).await;
    assert_eq!(distinct_and_duplicates(&got, "n").0, N);
    assert!(
        g.metric("switchyard_invocations_total", &[("outcome", "retry")])
            .await
            > 500.0
    );
    let first = &g.function_log()[0]["headers"];
    assert!(
        first["ce-id"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{stream}/")),
        "id is stream/sequence"
    );
    assert_eq!(first["ce-subject"], format!("{stream}.orders"));
}

#[tokio::test]
async fn rabbitmq_to_jetstream_ten_thousand_with_random_failures() {
    const N: usize = 10_000;
    let (input, stream) = (unique("in"), unique("JSOUT"));
    rmq::declare(&input, FieldTable::default()).await;
    common::nats::create_stream(&stream).await;
    rmq::publish(&input, values(N, serde_json::json!({ "fail_rate": 0.2 }))).await;
    let yaml = format!(
        "{FUNCTION}
pipelines:
  r:
    trigger: {{ type: rabbitmq, url: \"{}\", queue: {input}, prefetch: 64 }}
    function: f
    retry: {{ max_attempts: 12, backoff: exponential, initial_delay: 20ms, max_delay: 1s }}
    outputs:
      - {{ name: out, type: nats, url: \"{}\", subject: \"{stream}.results\", jetstream: true }}
",
        rmq::URL,
        common::nats::URL
    );
    let _g = Gateway::start(&yaml).await;
    let got = common::nats::read_stream(&stream, Duration::from_secs(240), |v| {
        distinct_and_duplicates(v, "n").0 >= N
    })
    .await;
    assert_eq!(distinct_and_duplicates(&got, "n").0, N);
}

/// A subject made from the record (here the function's `ce-subject`) that NATS refuses is an
/// invalid write: dead-lettered at once, not retried as if the server were away.
#[tokio::test]
async fn a_subject_nats_refuses_is_dead_lettered_at_once() {
    let (input, stream, dead) = (unique("in"), unique("JSSUB"), unique("dead"));
    rmq::declare(&input, FieldTable::default()).await;
    rmq::declare(&dead, FieldTable::default()).await;
    common::nats::create_stream(&stream).await;
    let mut vals = values(10, serde_json::json!({}));
    vals[4]["reply_subject"] = "two words".into();
    rmq::publish(&input, vals).await;
    let yaml = format!(
        "{FUNCTION}
pipelines:
  r:
    trigger: {{ type: rabbitmq, url: \"{rmq}\", queue: {input} }}
    function: f
    retry: {{ max_attempts: 5, initial_delay: 20ms }}
    dead_letter: {{ type: rabbitmq, url: \"{rmq}\", routing_key: {dead} }}
    outputs:
      - {{ name: out, type: nats, url: \"{nats}\", subject: \"{stream}.{{subject}}\", jetstream: true }}
",
        rmq = rmq::URL,
        nats = common::nats::URL
    );
    let g = Gateway::start(&yaml).await;
    let got = common::nats::read_stream(&stream, Duration::from_secs(30), |v| {
        distinct_and_duplicates(v, "n").0 >= 9
    })
    .await;
    assert_eq!(distinct_and_duplicates(&got, "n").0, 9, "the rest flows");
    let d = rmq::consume_until(&dead, Duration::from_secs(20), |v| !v.is_empty()).await;
    assert_eq!(d.len(), 1);
    assert_eq!(d[0]["switchyarderrorcode"], "invalid", "{}", d[0]);
    assert_eq!(d[0]["switchyardattempts"], "1", "not retried: {}", d[0]);
    assert_eq!(
        g.metric(
            "switchyard_outputs_total",
            &[("pipeline", "r"), ("output", "out"), ("outcome", "retry")]
        )
        .await,
        0.0
    );
}

/// A RabbitMQ `message_id` may hold a line break, which a NATS header cannot carry (async-nats
/// panics on one): the JetStream output percent-encodes such a value, and every message goes
/// through, each carrying its id.
#[tokio::test]
async fn an_id_with_a_line_break_reaches_jetstream_percent_encoded() {
    use futures::StreamExt;
    use lapin::types::ShortString;
    let (input, stream) = (unique("in"), unique("JSID"));
    rmq::declare(&input, FieldTable::default()).await;
    common::nats::create_stream(&stream).await;
    rmq::publish_with(
        &input,
        (0..3).map(|n| {
            let id = if n == 2 {
                "plain-2".to_string()
            } else {
                format!("m-{n}\r\nnext line")
            };
            let props = rmq::json_properties().with_message_id(ShortString::from(id));
            (serde_json::json!({ "n": n }), props)
        }),
    )
    .await;
    let yaml = format!(
        "{FUNCTION}
pipelines:
  r:
    trigger: {{ type: rabbitmq, url: \"{}\", queue: {input} }}
    function: f
    outputs:
      - {{ name: out, type: nats, url: \"{}\", subject: \"{stream}.results\", jetstream: true }}
",
        rmq::URL,
        common::nats::URL
    );
    let _g = Gateway::start(&yaml).await;
    let mut msgs = common::nats::messages_from_start(&stream).await;
    let mut ids = std::collections::BTreeMap::new();
    while ids.len() < 3 {
        let m = match tokio::time::timeout(Duration::from_secs(30), msgs.next()).await {
            Ok(Some(Ok(m))) => m,
            other => panic!("{} of 3 written, then {other:?}", ids.len()),
        };
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        let h = m.headers.as_ref().expect("ce-* headers");
        let id = h.get("ce-id").unwrap().as_str().to_string();
        assert_eq!(h.get("Nats-Msg-Id").unwrap().as_str(), id);
        ids.insert(v["n"].as_u64().unwrap(), id);
    }
    assert_eq!(ids[&0], "m-0%0D%0Anext line");
    assert_eq!(ids[&1], "m-1%0D%0Anext line");
    assert_eq!(ids[&2], "plain-2");
}

#[tokio::test]
async fn poison_messages_are_dead_lettered_or_terminated_and_the_rest_flows() {
    // With a dead letter.
    let (stream, out, dead) = (unique("JSP"), unique("out"), unique("dead"));
    common::nats::create_stream(&stream).await;
    rmq::declare(&out, FieldTable::default()).await;
    rmq::declare(&dead, FieldTable::default()).await;
    let mut vals = values(40, serde_json::json!({}));
    vals[5]["status"] = 400.into();
    common::nats::publish(&format!("{stream}.x"), vals).await;
    let _g = Gateway::start(&js_to_rabbit(&stream, &out, Some(&dead), 3)).await;
    assert_eq!(
        distinct_and_duplicates(&read_rabbit(&out, 39, 60).await, "n").0,
        39
    );
    let d = rmq::consume_until(&dead, Duration::from_secs(20), |v| !v.is_empty()).await;
    assert_eq!(d.len(), 1);
    assert_eq!(d[0]["switchyarderrorcode"], "400");

    // Without one: the message is terminated, never redelivered.
    let (stream2, out2) = (unique("JST"), unique("out"));
    common::nats::create_stream(&stream2).await;
    rmq::declare(&out2, FieldTable::default()).await;
    let mut vals = values(20, serde_json::json!({}));
    vals[2]["status"] = 400.into();
    common::nats::publish(&format!("{stream2}.x"), vals).await;
    let g2 = Gateway::start(&js_to_rabbit(&stream2, &out2, None, 3)).await;
    assert_eq!(
        distinct_and_duplicates(&read_rabbit(&out2, 19, 60).await, "n").0,
        19
    );
    // Past ack_wait (5 s): a message that was not terminated would have come back.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let calls = g2
        .function_log()
        .iter()
        .filter(|r| {
            serde_json::from_str::<serde_json::Value>(r["body"].as_str().unwrap()).unwrap()
                ["status"]
                == 400
        })
        .count();
    assert_eq!(
        calls, 1,
        "the poison message was called once and terminated"
    );
}

#[tokio::test]
async fn sigkill_mid_stream_then_restart_loses_nothing() {
    const N: usize = 3_000;
    let (stream, out) = (unique("JSK"), unique("out"));
    common::nats::create_stream(&stream).await;
    rmq::declare(&out, FieldTable::default()).await;
    common::nats::publish(
        &format!("{stream}.x"),
        values(N, serde_json::json!({ "sleep_ms": 20 })),
    )
    .await;
    let mut g = Gateway::start(&js_to_rabbit(&stream, &out, None, 3)).await;
    let first = read_rabbit(&out, N / 3, 120).await;
    let _ = g.signal_and_wait(libc::SIGKILL);
    g.spawn();
    g.wait_ready().await;
    let rest = rmq::consume_until(&out, Duration::from_secs(180), |v| {
        let mut all = first.clone();
        all.extend_from_slice(v);
        distinct_and_duplicates(&all, "n").0 >= N
    })
    .await;
    let mut all = first;
    all.extend(rest);
    let (distinct, dups) = distinct_and_duplicates(&all, "n");
    assert_eq!(distinct, N, "none lost");
    eprintln!("duplicates after SIGKILL: {dups}");
    // The engine holds at most max_in_flight (by default twice the concurrency with an output:
    // 32 here) plus the channel (as many); those are the only ones that can have reached the
    // output without their ack.
    assert!(dups <= 64, "{dups} duplicates");
    let pids: std::collections::HashSet<_> =
        g.function_log().iter().map(|r| r["pid"].as_u64()).collect();
    assert_eq!(pids.len(), 2);
}

#[tokio::test]
async fn two_instances_share_one_durable() {
    const N: usize = 2_000;
    let (stream, out) = (unique("JS2"), unique("out"));
    common::nats::create_stream(&stream).await;
    rmq::declare(&out, FieldTable::default()).await;
    let yaml = js_to_rabbit(&stream, &out, None, 3);
    // Both pull before the messages arrive, so neither drains the stream alone.
    let a = Gateway::start(&yaml).await;
    let b = Gateway::start(&yaml).await;
    common::nats::publish(
        &format!("{stream}.x"),
        values(N, serde_json::json!({ "sleep_ms": 2 })),
    )
    .await;
    let got = read_rabbit(&out, N, 180).await;
    assert_eq!(distinct_and_duplicates(&got, "n").0, N);
    let (na, nb) = (a.function_log().len(), b.function_log().len());
    assert!(na > N / 10 && nb > N / 10, "a handled {na}, b {nb}");
    assert_eq!(na + nb, N, "each message handled once");
}

#[tokio::test]
async fn long_calls_keep_their_message_with_in_progress_acks() {
    // ack_wait is 2 s and the call takes 4 s: without in-progress acks the server would
    // redeliver the message, and the function would see it twice.
    let (stream, out) = (unique("JSW"), unique("out"));
    common::nats::create_stream(&stream).await;
    rmq::declare(&out, FieldTable::default()).await;
    common::nats::publish(
        &format!("{stream}.x"),
        values(3, serde_json::json!({ "sleep_ms": 4000 })),
    )
    .await;
    let yaml = js_to_rabbit(&stream, &out, None, 1).replace("ack_wait: 5s", "ack_wait: 2s");
    let g = Gateway::start(&yaml).await;
    let got = read_rabbit(&out, 3, 30).await;
    assert_eq!(distinct_and_duplicates(&got, "n"), (3, 0));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(g.function_log().len(), 3, "each long call happened once");
}

#[tokio::test]
async fn a_configured_content_type_is_given_to_messages_that_carry_none() {
    let stream = unique("JSCT");
    common::nats::create_stream(&stream).await;
    let js = common::nats::js().await;
    let subject = format!("{stream}.x");
    // JSON without a content type, text without one, and JSON that says it is text.
    js.publish(subject.clone(), r#"{"n":1}"#.into())
        .await
        .unwrap()
        .await
        .unwrap();
    js.publish(subject.clone(), "n,2".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let mut h = async_nats::HeaderMap::new();
    h.insert("Content-Type", "text/plain");
    js.publish_with_headers(subject.clone(), h, r#"{"n":3}"#.into())
        .await
        .unwrap()
        .await
        .unwrap();
    let yaml = |content_type: &str| {
        format!(
            "{FUNCTION}
pipelines:
  j:
    trigger:
      type: nats
      url: \"{}\"
      jetstream: {{ stream: {stream}, durable: gw }}
{content_type}    function: f
    outputs: []
",
            common::nats::URL
        )
    };
    let types = |g: &Gateway| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let log = g.function_log();
            if log.len() >= 3 || std::time::Instant::now() > deadline {
                let mut got: Vec<(String, String)> = log
                    .iter()
                    .map(|r| {
                        (
                            r["body"].as_str().unwrap().to_string(),
                            r["headers"]["content-type"].as_str().unwrap().to_string(),
                        )
                    })
                    .collect();
                got.sort();
                return got;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let pair = |body: &str, ct: &str| (body.to_string(), ct.to_string());
    // Configured: trusted for the two that carry none, the data not looked at.
    let g = Gateway::start(&yaml("      content_type: application/vnd.orders+json\n")).await;
    assert_eq!(
        types(&g),
        vec![
            pair("n,2", "application/vnd.orders+json"),
            pair(r#"{"n":1}"#, "application/vnd.orders+json"),
            pair(r#"{"n":3}"#, "text/plain"),
        ]
    );
    drop(g);
    // Not configured (a new durable reads the stream again): JSON is found to be JSON.
    let g = Gateway::start(&yaml("").replace("durable: gw", "durable: gw2")).await;
    assert_eq!(
        types(&g),
        vec![
            pair("n,2", "application/octet-stream"),
            pair(r#"{"n":1}"#, "application/json"),
            pair(r#"{"n":3}"#, "text/plain"),
        ]
    );
}

#[tokio::test]
async fn an_output_without_attributes_writes_the_value_and_its_content_type_alone() {
    use futures::StreamExt;
    // Two streams: one event id written twice to one stream would be dropped as a duplicate.
    let (input, with, without) = (unique("JSA"), unique("JSAW"), unique("JSAWO"));
    for s in [&input, &with, &without] {
        common::nats::create_stream(s).await;
    }
    common::nats::publish(&format!("{input}.x"), values(1, serde_json::json!({}))).await;
    let yaml = format!(
        "{FUNCTION}
pipelines:
  j:
    trigger: {{ type: nats, url: \"{url}\", jetstream: {{ stream: {input}, durable: gw }} }}
    function: f
    outputs:
      - {{ name: with, type: nats, url: \"{url}\", subject: \"{with}.x\", jetstream: true }}
      - {{ name: without, type: nats, url: \"{url}\", subject: \"{without}.x\", jetstream: true, attributes: false }}
",
        url = common::nats::URL
    );
    let _g = Gateway::start(&yaml).await;
    let header_names = |stream: String| async move {
        let mut msgs = common::nats::messages_from_start(&stream).await;
        let m = match tokio::time::timeout(Duration::from_secs(30), msgs.next()).await {
            Ok(Some(Ok(m))) => m,
            other => panic!("nothing written to {stream}: {other:?}"),
        };
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(v["n"], 0, "the function's answer, as it is");
        let mut keys: Vec<String> = m
            .headers
            .as_ref()
            .expect("headers")
            .iter()
            .map(|(k, _)| k.to_string())
            .collect();
        keys.sort();
        keys
    };
    let names = header_names(with).await;
    for k in [
        "ce-id",
        "ce-source",
        "ce-specversion",
        "ce-type",
        "Content-Type",
        "Nats-Msg-Id",
    ] {
        assert!(names.contains(&k.to_string()), "{k} missing from {names:?}");
    }
    assert_eq!(
        header_names(without).await,
        ["Content-Type", "Nats-Msg-Id"],
        "only the content type and the id JetStream deduplicates by"
    );
}

#[tokio::test]
async fn core_nats_subjects_flow_at_most_once() {
    use futures::StreamExt;
    let prefix = unique("core");
    let yaml = format!(
        "{FUNCTION}
pipelines:
  c:
    trigger: {{ type: nats, url: \"{url}\", subject: \"{prefix}.ping\", queue_group: gw }}
    function: f
    outputs:
      - {{ name: out, type: nats, url: \"{url}\", subject: \"{prefix}.pong\" }}
",
        url = common::nats::URL
    );
    let g = Gateway::start(&yaml).await;
    let client = async_nats::connect(common::nats::URL).await.unwrap();
    let mut pongs = client.subscribe(format!("{prefix}.pong")).await.unwrap();
    client.flush().await.unwrap();
    for n in 0..200 {
        client
            .publish(
                format!("{prefix}.ping"),
                serde_json::json!({ "n": n }).to_string().into(),
            )
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    let mut got = std::collections::HashSet::new();
    while got.len() < 200 {
        match tokio::time::timeout(Duration::from_secs(20), pongs.next()).await {
            Ok(Some(m)) => {
                let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
                got.insert(v["n"].as_u64().unwrap());
                assert_eq!(
                    m.headers
                        .as_ref()
                        .and_then(|h| h.get("ce-specversion"))
                        .map(|v| v.as_str()),
                    Some("1.0")
                );
            }
            _ => break,
        }
    }
    assert_eq!(got.len(), 200, "no loss on a healthy local server");
    assert_eq!(
        g.function_log()[0]["headers"]["ce-type"],
        "switchyard.nats.message"
    );
}
