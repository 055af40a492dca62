//! End to end on a real RabbitMQ broker: the real binary, a real function process.

mod common;

use common::kafka::unique;
use common::rabbitmq::*;
use common::*;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use std::time::Duration;

struct Setup {
    input: String,
    output: String,
    dead: String,
}

impl Setup {
    async fn new() -> Setup {
        let s = Setup {
            input: unique("in"),
            output: unique("out"),
            dead: unique("dead"),
        };
        declare(&s.input, FieldTable::default()).await;
        declare(&s.output, FieldTable::default()).await;
        declare(&s.dead, FieldTable::default()).await;
        s
    }

    fn yaml(&self, max_attempts: u32, dead_letter: bool) -> String {
        let dl = if dead_letter {
            format!(
                "    dead_letter: {{ type: rabbitmq, url: \"{URL}\", routing_key: {} }}\n",
                self.dead
            )
        } else {
            String::new()
        };
        format!(
            "
functions:
  f: {{ command: [python3, \"{{testfn}}\"], timeout: 5s, concurrency: 16 }}
pipelines:
  r:
    trigger: {{ type: rabbitmq, url: \"{URL}\", queue: {input}, prefetch: 32 }}
    function: f
    retry: {{ max_attempts: {max_attempts}, backoff: exponential, initial_delay: 20ms, max_delay: 2s }}
{dl}    outputs:
      - {{ name: out, type: rabbitmq, url: \"{URL}\", exchange: \"\", routing_key: {output} }}
",
            input = self.input,
            output = self.output,
        )
    }
}

async fn read_all(queue: &str, n: usize, secs: u64) -> Vec<serde_json::Value> {
    consume_until(queue, Duration::from_secs(secs), |v| {
        distinct_and_duplicates(v, "n").0 >= n
    })
    .await
}

#[tokio::test]
async fn ten_thousand_messages_with_random_failures_none_lost() {
    const N: usize = 10_000;
    let s = Setup::new().await;
    publish(&s.input, values(N, serde_json::json!({ "fail_rate": 0.2 }))).await;
    let g = Gateway::start(&s.yaml(12, true)).await;
    let out = read_all(&s.output, N, 240).await;
    assert_eq!(
        distinct_and_duplicates(&out, "n").0,
        N,
        "every message reached the output queue"
    );
    assert!(
        g.metric("switchyard_invocations_total", &[("outcome", "retry")])
            .await
            > 500.0
    );
    let dead = consume_until(&s.dead, Duration::from_secs(1), |v| !v.is_empty()).await;
    assert!(dead.is_empty(), "nothing dead-lettered: {dead:?}");
}

#[tokio::test]
async fn poison_messages_go_to_the_dead_letter_or_the_dlx_and_the_rest_flows() {
    // With a dead_letter output.
    let s = Setup::new().await;
    let mut vals = values(50, serde_json::json!({}));
    vals[7]["status"] = 400.into();
    publish(&s.input, vals).await;
    let _g = Gateway::start(&s.yaml(3, true)).await;
    let out = read_all(&s.output, 49, 60).await;
    assert_eq!(distinct_and_duplicates(&out, "n").0, 49);
    let dead = consume_until(&s.dead, Duration::from_secs(20), |v| !v.is_empty()).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["switchyarderrorcode"], "400");
    assert_eq!(dead[0]["data"]["n"], 7);

    // Without one: rejected without requeue, so the queue's own DLX takes it.
    let dlx_queue = unique("dlx");
    declare(&dlx_queue, FieldTable::default()).await;
    let input = unique("in-dlx");
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-dead-letter-exchange"),
        AMQPValue::LongString(LongString::from("")),
    );
    args.insert(
        ShortString::from("x-dead-letter-routing-key"),
        AMQPValue::LongString(LongString::from(dlx_queue.as_str())),
    );
    declare(&input, args).await;
    let s2 = Setup {
        input,
        output: unique("out2"),
        dead: unique("unused"),
    };
    declare(&s2.output, FieldTable::default()).await;
    let mut vals = values(20, serde_json::json!({}));
    vals[3]["status"] = 422.into();
    publish(&s2.input, vals).await;
    let _g2 = Gateway::start(&s2.yaml(3, false)).await;
    assert_eq!(
        distinct_and_duplicates(&read_all(&s2.output, 19, 60).await, "n").0,
        19
    );
    let dlx = consume_until(&dlx_queue, Duration::from_secs(20), |v| !v.is_empty()).await;
    assert_eq!(
        dlx.len(),
        1,
        "the broker's DLX received the rejected message"
    );
    assert_eq!(dlx[0]["n"], 3);
}

#[tokio::test]
async fn sigkill_mid_stream_loses_nothing_and_repeats_at_most_the_prefetch() {
    const N: usize = 3_000;
    let s = Setup::new().await;
    publish(&s.input, values(N, serde_json::json!({ "sleep_ms": 20 }))).await;
    let mut g = Gateway::start(&s.yaml(3, true)).await;
    // Let a third through, then kill.
    let first = read_all(&s.output, N / 3, 120).await;
    let _ = g.signal_and_wait(libc::SIGKILL);
    g.spawn();
    g.wait_ready().await;
    let rest = consume_until(&s.output, Duration::from_secs(180), |v| {
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
    assert!(dups <= 32, "{dups} duplicates for a prefetch of 32");
    let pids: std::collections::HashSet<_> =
        g.function_log().iter().map(|r| r["pid"].as_u64()).collect();
    assert_eq!(
        pids.len(),
        2,
        "the restarted gateway (and its function) did part of the work"
    );
}

#[tokio::test]
async fn two_instances_share_the_queue() {
    const N: usize = 2_000;
    let s = Setup::new().await;
    let yaml = s.yaml(3, true);
    // Both consume before the messages arrive, so neither drains the queue alone.
    let a = Gateway::start(&yaml).await;
    let b = Gateway::start(&yaml).await;
    publish(&s.input, values(N, serde_json::json!({ "sleep_ms": 2 }))).await;
    let out = read_all(&s.output, N, 180).await;
    assert_eq!(distinct_and_duplicates(&out, "n").0, N);
    let (na, nb) = (a.function_log().len(), b.function_log().len());
    assert!(na > N / 10 && nb > N / 10, "a handled {na}, b {nb}");
    assert_eq!(na + nb, N, "competing consumers: each message handled once");
}

/// The `http` output speaks the CloudEvents HTTP binding: an attribute with a line break (a
/// RabbitMQ `message_id` may hold one) or non-ASCII text is percent-encoded, so the write goes
/// through instead of failing as a malformed header. The function's percent-encoded
/// `ce-subject` is decoded on the way in, so it is encoded once on the way out, not twice.
#[tokio::test]
async fn an_http_output_percent_encodes_attributes_a_header_cannot_carry() {
    use std::sync::{Arc, Mutex};
    let got: Arc<Mutex<Vec<(String, String, String)>>> = Arc::default();
    let seen = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |h: axum::http::HeaderMap| async move {
            let get = |n: &str| h.get(n).map(|v| v.to_str().unwrap().to_string());
            seen.lock().unwrap().push((
                get("ce-id").unwrap_or_default(),
                get("ce-subject").unwrap_or_default(),
                get("traceparent").unwrap_or_default(),
            ));
            axum::http::StatusCode::NO_CONTENT
        }),
    );
    let port = serve(app).await;
    let input = unique("in");
    declare(&input, FieldTable::default()).await;
    publish_with(
        &input,
        (0..2).map(|n| {
            let props =
                json_properties().with_message_id(ShortString::from(format!("m-{n}\r\nnext")));
            // The function answers in binary mode, its ce-subject percent-encoded.
            let reply = serde_json::json!({ "n": n, "reply_subject": "caf%C3%A9 100%25" });
            (reply, props)
        }),
    )
    .await;
    let _g = Gateway::start(&format!(
        "
functions:
  f: {{ command: [python3, \"{{testfn}}\"], timeout: 5s }}
pipelines:
  r:
    trigger: {{ type: rabbitmq, url: \"{URL}\", queue: {input} }}
    function: f
    retry: {{ max_attempts: 2, initial_delay: 20ms }}
    outputs:
      - {{ name: hook, type: http, url: \"http://127.0.0.1:{port}/hook\" }}
"
    ))
    .await;
    eventually(30, "both written", || got.lock().unwrap().len() >= 2).await;
    let mut got = got.lock().unwrap().clone();
    got.sort();
    for (n, (id, subject, traceparent)) in got.iter().enumerate() {
        assert_eq!(id, &format!("m-{n}%0D%0Anext"));
        assert_eq!(subject, "caf%C3%A9 100%25");
        assert!(traceparent.starts_with("00-"), "{traceparent}");
    }
}

/// A pipeline that may hold more events than the queue's `prefetch` lets arrive unacknowledged
/// is told so at start: it can never fill, and each delivery wakes the engine alone. One whose
/// prefetch covers what it holds is not.
#[tokio::test]
async fn a_prefetch_below_max_in_flight_is_warned_about() {
    let input = unique("in");
    declare(&input, FieldTable::default()).await;
    let yaml = |concurrency: usize, prefetch: usize| {
        format!(
            "
functions:
  f: {{ command: [python3, \"{{testfn}}\"], timeout: 5s, concurrency: {concurrency} }}
pipelines:
  r:
    trigger: {{ type: rabbitmq, url: \"{URL}\", queue: {input}, prefetch: {prefetch} }}
    function: f
"
        )
    };
    let warning = "prefetch is below max_in_flight";
    let over = Gateway::start(&yaml(128, 64)).await;
    eventually(10, "the warning in the gateway's log", || {
        over.log().contains(warning)
    })
    .await;
    let log = over.log();
    let line = log.lines().find(|l| l.contains(warning)).unwrap();
    assert!(
        line.contains("max_in_flight=128") && line.contains("prefetch=64"),
        "{line}"
    );
    let covered = Gateway::start(&yaml(64, 64)).await;
    // Both started the same way; the first warned before it was ready.
    assert!(!covered.log().contains(warning), "{}", covered.log());
}
