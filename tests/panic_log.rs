//! A panic is logged as one structured event (one JSON line with `--log-format json`), not as
//! the default hook's plain text. Its own test binary: the panic hook is global to a process.

use std::io::Write;
use std::sync::{Arc, Mutex};

/// A log sink the test reads back.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_panic_is_one_json_log_line_with_its_message_and_place() {
    let sink = Sink::default();
    let writer = sink.clone();
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_writer(move || writer.clone())
        .init();
    switchyard::telemetry::log_panics();

    let line = line!() + 3;
    let caught = std::thread::Builder::new()
        .name("delivery".into())
        .spawn(|| panic!("cannot carry {}", "id-7"))
        .unwrap()
        .join();
    // Back to the default hook, so a failed assertion below is printed, not logged here.
    drop(std::panic::take_hook());
    assert!(caught.is_err(), "the thread panicked");

    let out = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "one line for one panic: {out}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).expect("the line is JSON");
    assert_eq!(v["level"], "ERROR");
    assert_eq!(v["message"], "panicked");
    assert_eq!(v["panic"], "cannot carry id-7");
    assert_eq!(v["thread"], "delivery");
    let location = v["location"].as_str().unwrap();
    assert!(
        location.starts_with(&format!("tests/panic_log.rs:{line}:")),
        "{location}"
    );
}
