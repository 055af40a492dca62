//! OpenTelemetry tracing, end to end: the real binary exports OTLP/HTTP (protobuf) to a
//! receiver run by this test; the spans receive → invoke (per attempt) → output → ack form
//! one trace continuing the caller's `traceparent`, and the function and the output see the
//! `traceparent` of their own span.

mod common;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Received {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
    /// Headers of the requests the http output made.
    outputs: Arc<Mutex<Vec<axum::http::HeaderMap>>>,
    paths: Arc<Mutex<Vec<String>>>,
}

/// An OTLP/HTTP receiver (`POST /v1/traces`) and an output endpoint (`POST /out`).
async fn receiver() -> (u16, Received) {
    use axum::routing::post;
    let got = Received::default();
    let (spans, outputs, paths) = (got.spans.clone(), got.outputs.clone(), got.paths.clone());
    let app = axum::Router::new()
        .route(
            "/v1/traces",
            post(
                move |uri: axum::http::Uri, body: axum::body::Bytes| async move {
                    paths.lock().unwrap().push(uri.path().to_string());
                    let req = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                    for rs in req.resource_spans {
                        let service = rs
                            .resource
                            .iter()
                            .flat_map(|r| &r.attributes)
                            .find(|kv| kv.key == "service.name")
                            .map(|kv| format!("{:?}", kv.value))
                            .unwrap_or_default();
                        for ss in rs.scope_spans {
                            for s in ss.spans {
                                spans.lock().unwrap().push((service.clone(), s));
                            }
                        }
                    }
                    axum::http::StatusCode::OK
                },
            ),
        )
        .route(
            "/out",
            post(move |headers: axum::http::HeaderMap| async move {
                outputs.lock().unwrap().push(headers);
                axum::http::StatusCode::OK
            }),
        );
    let port = serve(app).await;
    (port, got)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn attr(s: &Span, key: &str) -> String {
    s.attributes
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| format!("{:?}", kv.value))
        .unwrap_or_default()
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

// Multi-threaded: the receiver must answer while the test thread waits for the gateway's exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_of_one_delivery_form_one_trace_that_continues_the_callers() {
    let (port, got) = receiver().await;
    let mut g = Gateway::start(&format!(
        "
telemetry: {{ otlp_endpoint: \"http://127.0.0.1:{port}\", service_name: traced-gateway }}
functions:
  f: {{ command: [python3, \"{{testfn}}\"], timeout: 5s }}
pipelines:
  p:
    trigger: {{ type: http, path: /in, response: sync }}
    function: f
    retry: {{ max_attempts: 3, initial_delay: 10ms, max_delay: 10ms }}
    outputs:
      - {{ name: out, type: http, url: \"http://127.0.0.1:{port}/out\" }}
"
    ))
    .await;
    // The first attempt answers 503, the second 200.
    let r = g
        .client
        .post(g.ingress_url("/in"))
        .header("content-type", "application/json")
        .header("traceparent", format!("00-{TRACE}-{CALLER_SPAN}-01"))
        .body(r#"{"n":1,"fail_until":2}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", g.log());
    // A request with no traceparent starts a trace of its own.
    assert_eq!(g.post("/in", r#"{"n":2}"#).await.0, 200);
    // SIGTERM flushes the spans still buffered.
    assert!(g.signal_and_wait(libc::SIGTERM).success());

    let spans = got.spans.lock().unwrap().clone();
    assert!(
        got.paths.lock().unwrap().iter().all(|p| p == "/v1/traces"),
        "the endpoint got /v1/traces added"
    );
    assert!(spans.iter().all(|(svc, _)| svc.contains("traced-gateway")));
    let ours: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| hex(&s.trace_id) == TRACE)
        .collect();
    let named = |n: &str| -> Vec<&Span> {
        ours.iter()
            .copied()
            .filter(|s| s.name.starts_with(n))
            .collect()
    };
    let names: Vec<_> = ours.iter().map(|s| s.name.clone()).collect();
    let receive = named("receive");
    assert_eq!(receive.len(), 1, "{names:?}");
    let receive = receive[0];
    assert_eq!(receive.name, "receive p");
    assert_eq!(
        hex(&receive.parent_span_id),
        CALLER_SPAN,
        "continues the caller"
    );
    let rid = hex(&receive.span_id);

    let mut invokes = named("invoke f");
    invokes.sort_by_key(|s| attr(s, "switchyard.attempt"));
    assert_eq!(invokes.len(), 2, "one span per attempt: {names:?}");
    for s in &invokes {
        assert_eq!(hex(&s.parent_span_id), rid);
    }
    assert!(attr(invokes[0], "http.response.status_code").contains("503"));
    assert_eq!(
        invokes[0].status.as_ref().map(|st| st.code),
        Some(2),
        "the failed attempt is an error"
    );
    assert!(attr(invokes[1], "http.response.status_code").contains("200"));

    let outputs = named("output out");
    assert_eq!(outputs.len(), 1, "{names:?}");
    assert_eq!(hex(&outputs[0].parent_span_id), rid);
    let acks = named("ack");
    assert_eq!(acks.len(), 1, "{names:?}");
    assert_eq!(hex(&acks[0].parent_span_id), rid);
    assert!(attr(acks[0], "switchyard.outcome").contains("delivered"));

    // The function saw each attempt's own span as its parent, in both traceparent headers.
    let calls: Vec<_> = g
        .function_log()
        .into_iter()
        .filter(|c| {
            c["headers"]["traceparent"]
                .as_str()
                .unwrap_or("")
                .contains(TRACE)
        })
        .collect();
    assert_eq!(calls.len(), 2);
    for (call, span) in calls.iter().zip(&invokes) {
        let want = format!("00-{TRACE}-{}-01", hex(&span.span_id));
        assert_eq!(call["headers"]["traceparent"], want.as_str());
        assert_eq!(call["headers"]["ce-traceparent"], want.as_str());
    }
    // The output's record carries the output span's context.
    let out = got.outputs.lock().unwrap().clone();
    let want = format!("00-{TRACE}-{}-01", hex(&outputs[0].span_id));
    assert!(
        out.iter().any(|h| h
            .get("ce-traceparent")
            .is_some_and(|v| v.to_str().unwrap() == want)),
        "output headers: {out:?}"
    );

    // The second request: a new trace whose receive span is a root.
    let roots: Vec<_> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.name == "receive p" && hex(&s.trace_id) != TRACE)
        .collect();
    assert_eq!(roots.len(), 1);
    assert!(roots[0].parent_span_id.is_empty());
}

#[tokio::test]
async fn without_an_endpoint_nothing_is_traced_and_traceparent_still_flows() {
    let mut g = Gateway::start(
        "
functions:
  f: { command: [python3, \"{testfn}\"], timeout: 5s }
pipelines:
  p:
    trigger: { type: http, path: /in, response: sync }
    function: f
",
    )
    .await;
    let r = g
        .client
        .post(g.ingress_url("/in"))
        .header("content-type", "application/json")
        .header("traceparent", format!("00-{TRACE}-{CALLER_SPAN}-01"))
        .body(r#"{"n":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let calls = g.function_log();
    let tp = calls[0]["headers"]["ce-traceparent"].as_str().unwrap();
    assert!(tp.starts_with(&format!("00-{TRACE}-")), "{tp}");
    assert!(!tp.contains(CALLER_SPAN), "a span of its own: {tp}");
    assert!(g.signal_and_wait(libc::SIGTERM).success());
}
