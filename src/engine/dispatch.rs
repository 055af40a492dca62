//! The dispatcher of one pipeline.
//!
//! One task per pipeline owns all scheduling state, so there are no locks and no races:
//! - it reads from the trigger channel only while fewer than `max_in_flight` events are held
//!   (queued, batching or running), so a slow function pushes back on the trigger;
//! - it groups events into batches per lane (`batch.max_events`, `batch.max_wait`);
//! - it runs at most one job per lane at a time, in arrival order, and at most
//!   `max_jobs` jobs at once.

use super::{lane_of, Delivery};
use crate::config::Ordering;
use crate::telemetry;
use futures::stream::{FuturesUnordered, StreamExt};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use switchyard_sdk::TriggerEvent;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The limits of one dispatcher.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Events held at once.
    pub max_in_flight: usize,
    /// Jobs (invocations) running at once.
    pub max_jobs: usize,
    /// Events per job.
    pub max_events: usize,
    /// How long a partial batch may wait.
    pub max_wait: Duration,
    /// Ordering.
    pub ordering: Ordering,
}

type Job = Vec<TriggerEvent>;

struct State {
    limits: Limits,
    held: usize,
    /// Lanes with a job queued or running.
    claimed: HashSet<String>,
    /// Jobs waiting for their lane to finish the job before them.
    lane_queue: HashMap<String, VecDeque<Job>>,
    /// Jobs whose lane is theirs, waiting for a job slot.
    ready: VecDeque<(Option<String>, Job)>,
    /// Partial batches per lane, with the time they must be sent.
    batches: HashMap<Option<String>, (Job, Instant)>,
}

impl State {
    fn enqueue(&mut self, lane: Option<String>, job: Job) {
        match lane {
            Some(l) if self.claimed.contains(&l) => {
                self.lane_queue.entry(l).or_default().push_back(job)
            }
            Some(l) => {
                self.claimed.insert(l.clone());
                self.ready.push_back((Some(l), job));
            }
            None => self.ready.push_back((None, job)),
        }
    }

    fn finished(&mut self, lane: Option<String>, events: usize) {
        self.held -= events;
        if let Some(l) = lane {
            match self.lane_queue.get_mut(&l).and_then(VecDeque::pop_front) {
                Some(next) => self.ready.push_back((Some(l), next)),
                None => {
                    self.lane_queue.remove(&l);
                    self.claimed.remove(&l);
                }
            }
        }
    }

    fn add(&mut self, ev: TriggerEvent) {
        let lane = lane_of(self.limits.ordering, &ev.event);
        if self.limits.max_events <= 1 {
            self.enqueue(lane, vec![ev]);
            return;
        }
        let deadline = Instant::now() + self.limits.max_wait;
        let (batch, _) = self
            .batches
            .entry(lane.clone())
            .or_insert_with(|| (Vec::with_capacity(self.limits.max_events), deadline));
        batch.push(ev);
        if batch.len() >= self.limits.max_events {
            let (job, _) = self.batches.remove(&lane).expect("just filled");
            self.enqueue(lane, job);
        }
    }

    fn flush_due(&mut self, all: bool) {
        let now = Instant::now();
        let due: Vec<_> = self
            .batches
            .iter()
            .filter(|(_, (_, t))| all || *t <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for lane in due {
            if let Some((job, _)) = self.batches.remove(&lane) {
                self.enqueue(lane, job);
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.batches.values().map(|(_, t)| *t).min()
    }
}

/// Run a pipeline's dispatcher until the trigger channel is closed and every held event is
/// finished. `drain` closes the channel: nothing new is taken, what is held is finished.
pub async fn run_dispatcher(
    delivery: Arc<Delivery>,
    mut rx: mpsc::Receiver<TriggerEvent>,
    limits: Limits,
    drain: CancellationToken,
) {
    let pipeline = delivery.pipeline.to_string();
    let trigger = delivery.trigger_type;
    let mut st = State {
        limits,
        held: 0,
        claimed: HashSet::new(),
        lane_queue: HashMap::new(),
        ready: VecDeque::new(),
        batches: HashMap::new(),
    };
    let mut running = FuturesUnordered::new();
    let mut open = true;
    let in_flight = metrics::gauge!(telemetry::EVENTS_IN_FLIGHT, "pipeline" => pipeline.clone());
    let received = metrics::counter!(telemetry::EVENTS_RECEIVED, "pipeline" => pipeline.clone(), "trigger" => trigger);
    loop {
        while running.len() < st.limits.max_jobs {
            let Some((lane, job)) = st.ready.pop_front() else {
                break;
            };
            let d = delivery.clone();
            running.push(async move {
                let n = job.len();
                d.deliver(job).await;
                (lane, n)
            });
        }
        in_flight.set(st.held as f64);
        if !open && st.held == 0 {
            return;
        }
        let deadline = st.next_deadline();
        tokio::select! {
            Some((lane, n)) = running.next(), if !running.is_empty() => st.finished(lane, n),
            msg = rx.recv(), if open && st.held < st.limits.max_in_flight => match msg {
                Some(ev) => {
                    received.increment(1);
                    st.held += 1;
                    st.add(ev);
                }
                None => {
                    open = false;
                    st.flush_due(true);
                }
            },
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => st.flush_due(false),
            _ = drain.cancelled(), if open && !rx.is_closed() => {
                // Refuse new sends; what is already in the channel is still received.
                rx.close();
            }
        }
    }
}
