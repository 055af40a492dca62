//! `switchyard validate --connect` against the real brokers: every function, trigger source
//! and output is reported reachable or not, with the reason, and nothing is consumed.

mod common;

use common::kafka::unique;
use common::*;
use lapin::types::FieldTable;

fn validate_connect(dir: &std::path::Path, yaml: &str) -> (i32, String, String) {
    let path = dir.join("switchyard.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["validate", "--connect", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The report line of `what`.
fn line<'a>(stdout: &'a str, what: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(what))
        .unwrap_or_else(|| panic!("no line for {what} in:\n{stdout}"))
}

#[tokio::test]
async fn every_broker_and_function_is_reported_reachable_or_not_with_the_reason() {
    common::kafka::require_broker();
    common::nats::require_server();
    common::azure::require_emulator();
    let queue = unique("vq");
    common::rabbitmq::declare(&queue, FieldTable::default()).await;
    common::rabbitmq::publish(&queue, values(3, serde_json::json!({}))).await;
    let topic = unique("vt");
    common::kafka::create_topic(&topic, 3).await;
    let stream = unique("VS");
    common::nats::create_stream(&stream).await;
    let aq = unique("vaq");
    common::azure::create_queue(&aq).await;

    // A function that listens, and one that does not.
    let listening = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up = listening.local_addr().unwrap().port();
    let down = free_port();
    let rabbit = common::rabbitmq::URL;
    let nats = common::nats::URL;
    let conn = common::azure::CONN;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "
functions:
  up: {{ url: \"http://127.0.0.1:{up}\" }}
  down: {{ url: \"http://127.0.0.1:{down}\" }}
  proc: {{ command: [no-such-program-xyz] }}
pipelines:
  rabbit:
    trigger: {{ type: rabbitmq, url: \"{rabbit}\", queue: {queue} }}
    function: up
    outputs:
      - {{ name: topic, type: kafka, brokers: [\"127.0.0.1:9092\"], topic: {topic} }}
      - {{ name: hook, type: http, url: \"http://127.0.0.1:{down}/hook\" }}
  missing:
    trigger: {{ type: rabbitmq, url: \"{rabbit}\", queue: {queue}-missing }}
    function: down
  kafka:
    trigger: {{ type: kafka, brokers: [\"127.0.0.1:9092\"], topics: [{topic}], group: g }}
    function: proc
    dead_letter: {{ type: nats, url: \"{nats}\", subject: dead }}
  badkafka:
    trigger: {{ type: kafka, brokers: [\"127.0.0.1:{down}\"], topics: [{topic}], group: g }}
    function: up
  js:
    trigger: {{ type: nats, url: \"{nats}\", jetstream: {{ stream: {stream}, durable: d }} }}
    function: up
  azq:
    trigger: {{ type: azure_queue, connection_string: \"{conn}\", queue: {aq} }}
    function: up
    outputs:
      - {{ name: blob, type: azure_blob, connection_string: \"{conn}\", container: vcontainer, path: \"{{id}}.json\" }}
"
    );
    let (code, out, err) = validate_connect(dir.path(), &yaml);
    assert_eq!(code, 1, "something is unreachable:\n{out}\n{err}");
    eprintln!("{out}");
    let ok = |what: &str, says: &str| {
        let l = line(&out, what);
        assert!(
            l.contains(" reachable ") && l.contains(says),
            "{what} should be reachable, saying {says:?}: {l}"
        );
    };
    let bad = |what: &str, says: &str| {
        let l = line(&out, what);
        assert!(
            l.contains("UNREACHABLE") && l.to_lowercase().contains(&says.to_lowercase()),
            "{what} should be unreachable, saying {says:?}: {l}"
        );
    };
    ok("functions.up", &format!("127.0.0.1:{up}"));
    bad("functions.down", "refused");
    bad("functions.proc", "not found");
    ok(
        "pipelines.rabbit.trigger",
        &format!("queue {queue}: 3 message(s)"),
    );
    ok("pipelines.rabbit.outputs.topic", "connected");
    bad("pipelines.rabbit.outputs.hook", "refused");
    bad("pipelines.missing.trigger", "NOT_FOUND");
    ok(
        "pipelines.kafka.trigger",
        &format!("topic {topic}: 3 partition(s)"),
    );
    ok("pipelines.kafka.dead_letter", "connected");
    bad("pipelines.badkafka.trigger", "cannot reach the brokers");
    ok(
        "pipelines.js.trigger",
        &format!("stream {stream}: 0 message(s)"),
    );
    ok(
        "pipelines.azq.trigger",
        &format!("queue {aq}: about 0 message(s)"),
    );
    ok("pipelines.azq.outputs.blob", "connected");
    assert_eq!(
        common::rabbitmq::message_count(&queue).await,
        3,
        "nothing was consumed"
    );

    // All reachable: exit 0.
    let yaml = format!(
        "
functions:
  up: {{ url: \"http://127.0.0.1:{up}\" }}
pipelines:
  rabbit:
    trigger: {{ type: rabbitmq, url: \"{rabbit}\", queue: {queue} }}
    function: up
"
    );
    let (code, out, err) = validate_connect(dir.path(), &yaml);
    assert_eq!(code, 0, "{out}\n{err}");
    drop(listening);
}
