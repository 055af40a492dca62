//! One delivery: call the function, write every value to its outputs, then resolve the acks.
//!
//! The acknowledgement rule lives here and only here: an event is acknowledged
//! (`Delivered`, `DeadLettered`) only after the function answered and every output (or the
//! dead letter) confirmed its write. Anything else leaves it unacknowledged.

use crate::config::{RetryConfig, StatusRange};
use crate::invoker::{retry, Answer, FunctionService, Invocation, InvokeError, Target, Value};
use crate::otel;
use crate::telemetry::{OutputOutcome, PipelineMetrics};
use bytes::Bytes;
use futures::future::join_all;
use std::sync::Arc;
use std::time::Instant;
use switchyard_sdk::cloudevents::to_json;
use switchyard_sdk::error::OutputError;
use switchyard_sdk::{Event, EventStatus, Output, Record, TriggerEvent};
use tower::ServiceExt;
use tracing::Instrument;

/// A named output of a pipeline.
pub struct NamedOutput {
    /// Its name.
    pub name: String,
    /// The output.
    pub output: Arc<dyn Output>,
}

/// Everything one pipeline needs to deliver a job.
pub struct Delivery {
    /// The pipeline's name.
    pub pipeline: Arc<str>,
    /// The trigger's type, for metrics.
    pub trigger_type: &'static str,
    /// The trigger's binding name (azure-functions).
    pub trigger_name: Arc<str>,
    /// The function's name, for metrics.
    pub function: Arc<str>,
    /// The function with this pipeline's retry policy.
    pub invoker: FunctionService,
    /// Whether the pipeline batches.
    pub batch: bool,
    /// Retry policy, also for output writes.
    pub retry: Arc<RetryConfig>,
    /// The outputs.
    pub outputs: Vec<NamedOutput>,
    /// Their names, for the azure-functions format.
    pub output_names: Arc<[String]>,
    /// The dead letter, if any.
    pub dead_letter: Option<Arc<dyn Output>>,
    /// Metric handles.
    pub metrics: PipelineMetrics,
}

/// Why a delivery failed for good.
struct Failure {
    message: String,
    code: String,
    attempts: u32,
}

impl Delivery {
    /// Deliver a job (one event, or a batch) and resolve every ack.
    pub async fn deliver(&self, job: Vec<TriggerEvent>) {
        let (mut events, acks): (Vec<Event>, Vec<_>) =
            job.into_iter().map(|t| (t.event, t.ack)).unzip();
        let span = otel::receive(&self.pipeline, self.trigger_type, &events);
        match otel::traceparent(&span) {
            Some(tp) => {
                for e in &mut events {
                    e.extensions.insert("traceparent".into(), tp.clone());
                }
            }
            None => {
                for e in &mut events {
                    stamp_traceparent(e);
                }
            }
        }
        self.run(events, acks).instrument(span).await
    }

    async fn run(&self, events: Vec<Event>, acks: Vec<switchyard_sdk::Ack>) {
        let inv = Invocation::new(
            self.pipeline.clone(),
            self.trigger_name.clone(),
            events,
            self.batch,
            self.output_names.clone(),
        );
        // Shared with the invocation, not copied: the outputs and dead letters read them too.
        let events = inv.events.clone();
        let started = Instant::now();
        let result = self.invoker.clone().oneshot(inv.clone()).await;
        self.metrics
            .duration
            .record(started.elapsed().as_secs_f64());
        tracing::trace!(id = %events[0].id, ok = result.is_ok(), "function answered");
        let outcome = match result {
            Ok(answer) => {
                self.metrics.success.increment(1);
                match self.write_outputs(&answer, &events).await {
                    Ok(()) => Ok(answer),
                    Err(f) => Err(f),
                }
            }
            Err(e) => {
                self.metrics.failed.increment(1);
                Err(failure_of(&e, inv.attempts()))
            }
        };
        tracing::trace!(id = %events[0].id, ok = outcome.is_ok(), "outputs done");
        match outcome {
            Ok(answer) => {
                let _span = otel::ack("delivered").entered();
                for ack in acks {
                    ack.resolve(EventStatus::Delivered(answer.reply.clone()));
                }
            }
            Err(f) => {
                for (event, ack) in events.iter().zip(acks) {
                    let status = self.fail(event, &f).await;
                    let _span = otel::ack(status.name()).entered();
                    ack.resolve(status);
                }
            }
        }
    }

    /// Write every value to the outputs it targets, all at once; the first failure wins.
    async fn write_outputs(&self, answer: &Answer, events: &[Event]) -> Result<(), Failure> {
        let has_return = self.outputs.iter().any(|o| o.name == "$return");
        let mut writes = Vec::new();
        for (i, value) in answer.values.iter().enumerate() {
            let targets: Vec<&NamedOutput> = self
                .outputs
                .iter()
                .filter(|out| match &value.target {
                    Target::All => true,
                    Target::Named(n) => *n == out.name,
                    Target::Return => !has_return || out.name == "$return",
                })
                .collect();
            let Some((last, rest)) = targets.split_last() else {
                continue;
            };
            // The record is built once; only a value for several outputs is copied.
            let record = self.record_for(value, events, i, answer.values.len());
            for out in rest {
                writes.push(self.write_one(out, record.clone()));
            }
            writes.push(self.write_one(last, record));
        }
        join_all(writes).await.into_iter().collect()
    }

    /// Write one record to one output, in that output's span.
    fn write_one<'a>(
        &'a self,
        out: &'a NamedOutput,
        mut record: Record,
    ) -> impl std::future::Future<Output = Result<(), Failure>> + 'a {
        let span = otel::output(&out.name);
        if let Some(tp) = otel::traceparent(&span) {
            record.extensions.insert("traceparent".into(), tp);
        }
        async move {
            self.write_with_retry(&out.name, out.output.as_ref(), &record)
                .await
                .map_err(|(e, attempts)| Failure {
                    message: format!("output {}: {e}", out.name),
                    code: e.code(),
                    attempts,
                })
        }
        .instrument(span)
    }

    fn record_for(&self, value: &Value, events: &[Event], i: usize, n: usize) -> Record {
        // A batch answered value by value maps each value to its event; otherwise the first
        // event's attributes stand for the invocation.
        let event = if n == events.len() {
            &events[i]
        } else {
            &events[0]
        };
        let mut r = Record::answering(&self.pipeline, event, value.data.clone());
        if n != events.len() && n > 1 {
            r.id = format!("{}-{i}", events[0].id);
        }
        r.content_type = value.content_type.clone();
        if let Some(t) = &value.ty {
            r.ty = t.clone();
        }
        if value.subject.is_some() {
            r.subject = value.subject.clone();
        }
        if let Some(tp) = event.extensions.get("traceparent") {
            r.extensions.insert("traceparent".into(), tp.clone());
        }
        r
    }

    /// Whether a failed write may pass on a later try. A destination's status follows the
    /// pipeline's `retry_on`, as the function's does (by default 408, 429 and 5xx are retried,
    /// so an output's 400 or 413 goes to the dead letter at once); the rest is the error's own
    /// word (a connection error yes, an invalid value no).
    fn output_retryable(&self, e: &OutputError) -> bool {
        match e {
            OutputError::Status { status, .. } => {
                StatusRange::any_contains(&self.retry.retry_on, *status)
            }
            other => other.is_retryable(),
        }
    }

    /// Write one record, retrying retryable failures with the pipeline's backoff.
    async fn write_with_retry(
        &self,
        name: &str,
        out: &dyn Output,
        record: &Record,
    ) -> Result<(), (OutputError, u32)> {
        let mut attempt = 1;
        loop {
            match guarded_write(out, record).await {
                Ok(()) => {
                    self.metrics.output(name, OutputOutcome::Success);
                    tracing::Span::current().record("switchyard.attempts", attempt);
                    return Ok(());
                }
                Err(e) if self.output_retryable(&e) && attempt < self.retry.max_attempts => {
                    self.metrics.output(name, OutputOutcome::Retry);
                    let retry_after = match &e {
                        OutputError::Status { retry_after, .. } => *retry_after,
                        _ => None,
                    };
                    tracing::debug!(pipeline = %self.pipeline, output = name, attempt, error = %e, "retrying output write");
                    tokio::time::sleep(retry::delay(&self.retry, attempt, retry_after)).await;
                    attempt += 1;
                }
                Err(e) => {
                    self.metrics.output(name, OutputOutcome::Failed);
                    let span = tracing::Span::current();
                    span.record("switchyard.attempts", attempt);
                    otel::fail(&span, &e.to_string());
                    return Err((e, attempt));
                }
            }
        }
    }

    /// An event whose delivery failed for good: dead letter, else the trigger's poison rule.
    async fn fail(&self, event: &Event, f: &Failure) -> EventStatus {
        let Some(dl) = &self.dead_letter else {
            tracing::warn!(pipeline = %self.pipeline, id = %event.id, code = %f.code, attempts = f.attempts, error = %f.message, "delivery failed; no dead_letter, handing the event to the trigger's poison rule");
            self.metrics.rejected.increment(1);
            return EventStatus::Rejected {
                error: f.message.clone(),
            };
        };
        let mut record = dead_letter_record(&self.pipeline, event, f);
        let span = otel::output("dead_letter");
        if let Some(tp) = otel::traceparent(&span) {
            record.extensions.insert("traceparent".into(), tp);
        }
        match self
            .write_with_retry("dead_letter", dl.as_ref(), &record)
            .instrument(span)
            .await
        {
            Ok(()) => {
                tracing::warn!(pipeline = %self.pipeline, id = %event.id, code = %f.code, attempts = f.attempts, error = %f.message, "delivery failed; event written to the dead letter");
                self.metrics.dead_letters.increment(1);
                EventStatus::DeadLettered {
                    error: f.message.clone(),
                }
            }
            Err((e, _)) => {
                tracing::error!(pipeline = %self.pipeline, id = %event.id, error = %e, "dead letter refused the event; leaving it unacknowledged");
                self.metrics.abandoned.increment(1);
                EventStatus::Abandoned
            }
        }
    }
}

fn failure_of(e: &InvokeError, attempts: u32) -> Failure {
    Failure {
        message: e.to_string(),
        code: e.code(),
        attempts: attempts.max(1),
    }
}

/// An output's write with its panics caught. A client library may assert on a value it cannot
/// carry (async-nats on a line break in a header, lapin on a string over 255 bytes; both now
/// handled before the call). Such a panic is about this record: it becomes an invalid write,
/// counted and dead-lettered like any other, instead of ending the gateway and meeting the same
/// event again after every restart. The output's client is not left mid-write by it: each of
/// them builds a message whole before handing it to its connection.
async fn guarded_write(out: &dyn Output, record: &Record) -> Result<(), OutputError> {
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(out.write(record))
        .catch_unwind()
        .await
    {
        Ok(r) => r,
        Err(panic) => {
            let what =
                crate::telemetry::panic_message(&*panic).unwrap_or_else(|| "no message".into());
            Err(OutputError::Invalid(format!("the output panicked: {what}")))
        }
    }
}

/// The dead-letter value: the original event as a structured CloudEvent with the error
/// extensions `switchyarderror`, `switchyarderrorcode`, `switchyardattempts`.
fn dead_letter_record(pipeline: &str, event: &Event, f: &Failure) -> Record {
    let mut e = event.clone();
    e.set_extension("switchyarderror", f.message.clone());
    e.set_extension("switchyarderrorcode", f.code.clone());
    e.set_extension("switchyardattempts", f.attempts.to_string());
    let json = to_json(&e);
    let mut r = Record::answering(
        pipeline,
        event,
        Bytes::from(serde_json::to_vec(&json).expect("json")),
    );
    r.content_type = Some("application/cloudevents+json".into());
    r.extensions = e.extensions;
    r
}

/// Continue the caller's trace with a new span id, or start a new trace.
fn stamp_traceparent(e: &mut Event) {
    use rand::Rng;
    let mut rng = rand::rng();
    let span: u64 = rng.random::<u64>().max(1);
    // `00-<trace id>-<span id>-<flags>`: the caller's trace id (32 hex digits, not all zero)
    // and flags (2 characters) when its traceparent is well formed.
    let caller = e.extensions.get("traceparent").and_then(|t| {
        let mut p = t.split('-');
        let (version, trace, _, flags) = (p.next()?, p.next()?, p.next()?, p.next()?);
        let valid = p.next().is_none()
            && version == "00"
            && trace.len() == 32
            && trace.bytes().all(|b| b.is_ascii_hexdigit())
            && trace.bytes().any(|b| b != b'0');
        valid.then_some((trace, if flags.len() == 2 { flags } else { "01" }))
    });
    // Written byte by byte into place: `format!` with padded hex cost about 1,700 instructions
    // per event, a `String` pushed a character at a time about 900.
    let mut tp = [0u8; 55];
    tp[..3].copy_from_slice(b"00-");
    let flags = match caller {
        Some((trace, flags)) => {
            for (d, c) in tp[3..35].iter_mut().zip(trace.bytes()) {
                *d = c.to_ascii_lowercase();
            }
            flags
        }
        None => {
            hex_into(&mut tp[3..35], rng.random::<u128>().max(1));
            "01"
        }
    };
    tp[35] = b'-';
    hex_into(&mut tp[36..52], u128::from(span));
    tp[52] = b'-';
    tp[53..].copy_from_slice(flags.as_bytes());
    let tp = String::from_utf8(tp.to_vec()).expect("whole strs and hex digits are UTF-8");
    e.extensions.insert("traceparent".into(), tp);
}

/// `out` filled with the lowest hex digits of `v` that fit, lower-case, most significant first.
fn hex_into(out: &mut [u8], v: u128) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, d) in out.iter_mut().rev().enumerate() {
        *d = HEX[((v >> (4 * i)) & 0xf) as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_continued_or_started() {
        let mut e = Event::new("1", "s", "t");
        stamp_traceparent(&mut e);
        let tp = e.extensions["traceparent"].clone();
        let parts: Vec<_> = tp.split('-').collect();
        assert_eq!(
            (parts.len(), parts[0], parts[1].len(), parts[2].len()),
            (4, "00", 32, 16)
        );
        let mut child = Event::new("2", "s", "t");
        child.set_extension("traceparent", tp.clone());
        stamp_traceparent(&mut child);
        let c = child.extensions["traceparent"].clone();
        assert_eq!(c.split('-').nth(1), Some(parts[1]), "same trace");
        assert_ne!(c, tp, "new span");

        // Upper-case trace ids are continued in lower case; other flags kept.
        let mut upper = Event::new("3", "s", "t");
        upper.set_extension(
            "traceparent",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-00",
        );
        stamp_traceparent(&mut upper);
        let u = &upper.extensions["traceparent"];
        assert!(
            u.starts_with("00-0af7651916cd43dd8448eb211c80319c-") && u.ends_with("-00"),
            "{u}"
        );
        assert_eq!(u.len(), 55);
        // Malformed ones (an all-zero trace, a wrong version, a part too many) start a new trace.
        for bad in [
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x",
            "00-0af7651916cd43dd8448eb211c80319g-b7ad6b7169203331-01",
        ] {
            let mut e = Event::new("4", "s", "t");
            e.set_extension("traceparent", bad);
            stamp_traceparent(&mut e);
            let t = &e.extensions["traceparent"];
            assert!(
                !t.contains("0af7651916cd43dd8448eb211c8031") && t.len() == 55,
                "{bad} -> {t}"
            );
            assert!(
                t.ends_with("-01") && t[3..35].bytes().any(|b| b != b'0'),
                "{t}"
            );
        }
        let mut hex = [0u8; 4];
        hex_into(&mut hex, 0xab);
        assert_eq!(&hex, b"00ab");
    }

    struct Panics;

    #[async_trait::async_trait]
    impl Output for Panics {
        async fn write(&self, record: &Record) -> Result<(), OutputError> {
            panic!("cannot carry {}", record.id)
        }
    }

    #[tokio::test]
    async fn a_panicking_output_is_an_invalid_write_for_that_record() {
        let mut r = Record::new("p", Bytes::from_static(b"{}"));
        r.id = "id-7".into();
        let e = guarded_write(&Panics, &r).await.unwrap_err();
        assert!(!e.is_retryable());
        assert_eq!(e.code(), "invalid");
        assert_eq!(e.to_string(), "the output panicked: cannot carry id-7");
        // A write that does not panic passes through as it is.
        let ok = switchyard_sdk::testing::CollectOutput::default();
        guarded_write(&ok, &r).await.unwrap();
        assert_eq!(ok.records().len(), 1);
    }

    #[test]
    fn dead_letter_carries_error_extensions_and_data() {
        let e = Event::new("id-1", "switchyard/p/http/x", "switchyard.http.request")
            .with_data(&b"{\"a\":1}"[..], Some("application/json".into()));
        let f = Failure {
            message: "function answered 400".into(),
            code: "400".into(),
            attempts: 1,
        };
        let r = dead_letter_record("p", &e, &f);
        let v: serde_json::Value = serde_json::from_slice(&r.data).unwrap();
        assert_eq!(v["switchyarderrorcode"], "400");
        assert_eq!(v["switchyardattempts"], "1");
        assert_eq!(v["data"]["a"], 1);
        assert!(switchyard_sdk::cloudevents::validate_json(&v).is_empty());
    }
}
