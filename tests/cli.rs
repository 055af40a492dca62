//! The command line: validate, schema, exit codes.

mod common;

use std::process::Command;

fn switchyard(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn validate_accepts_the_demo_config() {
    let demo = format!("{}/config/switchyard.yaml", env!("CARGO_MANIFEST_DIR"));
    let out = switchyard(&["validate", "-c", &demo]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_example_config_is_valid() {
    let dir = format!("{}/config", env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            let out = switchyard(&["validate", "-c", p.to_str().unwrap()]);
            assert!(
                out.status.success(),
                "{}: {}",
                p.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            n += 1;
        }
    }
    assert!(n >= 10, "one example per connector: {n}");
}

#[test]
fn invalid_config_exits_2_naming_file_line_column_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "functions:\n  f: { url: \"http://127.0.0.1:1\" }\npipelines:\n  p:\n    trigger: { type: timer, schedule: \"* * * * * *\", every: 5 }\n    function: f\n",
    )
    .unwrap();
    for cmd in ["validate", "run"] {
        let out = switchyard(&[cmd, "-c", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        let expected = format!(
            "{}:5:54: pipelines.p.trigger.every: unknown field `every`",
            path.display()
        );
        assert!(err.contains(&expected), "{cmd}: {err}");
    }
}

#[test]
fn a_trigger_content_type_that_is_not_a_media_type_is_named_at_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "functions:\n  f: { url: \"http://127.0.0.1:1\" }\npipelines:\n  p:\n    trigger:\n      type: nats\n      url: nats://127.0.0.1:4222\n      jetstream: { stream: s, durable: d }\n      content_type: json\n    function: f\n",
    )
    .unwrap();
    let out = switchyard(&["validate", "-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let expected = format!(
        "{}:9:7: pipelines.p.trigger.content_type: invalid media type \"json\"",
        path.display()
    );
    assert!(err.contains(&expected), "{err}");
    // The same key with a media type is valid.
    let good = std::fs::read_to_string(&path)
        .unwrap()
        .replace("content_type: json", "content_type: application/json");
    std::fs::write(&path, good).unwrap();
    let out = switchyard(&["validate", "-c", path.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_semantic_problem_is_listed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "functions:\n  f: { url: \"http://127.0.0.1:1\", concurrency: 0 }\npipelines:\n  p:\n    trigger: { type: http, path: /x }\n    function: g\n",
    )
    .unwrap();
    let out = switchyard(&["validate", "-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(":2:"), "{err}");
    assert!(
        err.contains("functions.f.concurrency: must be at least 1"),
        "{err}"
    );
    assert!(
        err.contains(":6:5: pipelines.p.function: no function named \"g\""),
        "{err}"
    );
}

#[test]
fn an_amqp_name_over_255_bytes_is_named_at_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    let long = "q".repeat(256);
    std::fs::write(
        &path,
        format!(
            "functions:\n  f: {{ url: \"http://127.0.0.1:1\" }}\npipelines:\n  p:\n    trigger:\n      type: rabbitmq\n      url: amqp://127.0.0.1\n      queue: {long}\n      declare:\n        bindings:\n          - {{ exchange: events, routing_key: {long} }}\n    function: f\n    outputs:\n      - {{ name: o, type: rabbitmq, url: amqp://127.0.0.1, exchange: {long}, routing_key: x }}\n"
        ),
    )
    .unwrap();
    let out = switchyard(&["validate", "-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for (at, key) in [
        (":8:7:", "pipelines.p.trigger.queue"),
        (
            ":11:33:",
            "pipelines.p.trigger.declare.bindings[0].routing_key",
        ),
        (":14:59:", "pipelines.p.outputs[0].exchange"),
    ] {
        assert!(
            err.contains(&format!(
                "{at} {key}: is 256 bytes; AMQP allows at most 255"
            )),
            "{key} at {at}: {err}"
        );
    }
}

#[test]
fn secrets_from_env_never_appear_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "functions:\n  f: { url: \"http://127.0.0.1:1\", headers: { Authorization: \"Bearer ${TOKEN}\" } }\npipelines:\n  p:\n    trigger: { type: http, path: /x }\n    function: f\n    retry: { max_attempts: lots }\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["validate", "-c", path.to_str().unwrap()])
        .env("TOKEN", "sup3r-s3cret-value")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pipelines.p.retry.max_attempts"), "{err}");
    assert!(!err.contains("sup3r"), "{err}");
}

#[test]
fn schema_is_json_with_field_docs() {
    let out = switchyard(&["schema"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = v.to_string();
    assert!(
        text.contains("In-flight invocations to this function"),
        "field docs become descriptions"
    );
    assert!(text.contains("\"timer\"") && text.contains("\"directory\""));
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(switchyard(&["frobnicate"]).status.code(), Some(2));
    assert!(switchyard(&["--version"]).status.success());
}

#[test]
fn validate_warns_when_a_prefetch_is_below_what_the_pipeline_holds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prefetch.yaml");
    let yaml = |concurrency: usize, max_in_flight: &str| {
        format!(
            "functions:\n  f: {{ url: \"http://127.0.0.1:1\", concurrency: {concurrency} }}\npipelines:\n  r:\n    trigger: {{ type: rabbitmq, url: amqp://127.0.0.1, queue: q, prefetch: 64 }}\n    function: f\n{max_in_flight}"
        )
    };
    for (concurrency, extra, warned) in [
        (128, "", Some(128)),
        (64, "    max_in_flight: 100\n", Some(100)),
        (64, "", None),
        (128, "    max_in_flight: 64\n", None),
    ] {
        std::fs::write(&path, yaml(concurrency, extra)).unwrap();
        let out = switchyard(&["validate", "-c", path.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "a warning is not an error: {err}");
        match warned {
            Some(held) => assert!(
                err.contains("warning: pipelines.r: the trigger's prefetch is below max_in_flight")
                    && err.contains(&format!("(max_in_flight {held}, prefetch 64)")),
                "concurrency {concurrency} {extra:?}: {err}"
            ),
            None => assert!(
                !err.contains("warning"),
                "concurrency {concurrency} {extra:?}: {err}"
            ),
        }
    }
}
