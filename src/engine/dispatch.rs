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
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use switchyard_sdk::TriggerEvent;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
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
/// finished. `drain` closes the channel: nothing new is taken, what is held is finished. `Err`
/// when a delivery task failed (a panic, a bug): the pipeline stops and the gateway exits.
pub async fn run_dispatcher(
    delivery: Arc<Delivery>,
    mut rx: mpsc::Receiver<TriggerEvent>,
    limits: Limits,
    drain: CancellationToken,
) -> Result<(), String> {
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
    // Deliveries run as tasks of their own, spread over the runtime's threads; dropping the
    // set (when a drain times out) aborts them, which leaves their events unacknowledged.
    let mut running: JoinSet<(Option<String>, usize)> = JoinSet::new();
    let mut open = true;
    let in_flight = metrics::gauge!(telemetry::EVENTS_IN_FLIGHT, "pipeline" => pipeline.clone());
    let received = metrics::counter!(telemetry::EVENTS_RECEIVED, "pipeline" => pipeline.clone(), "trigger" => trigger);
    // Made once: a new `cancelled()` per turn of the loop registered a waiter every time.
    let cancelled = drain.cancelled();
    tokio::pin!(cancelled);
    // Events taken from the channel per turn: everything waiting, up to the in-flight bound.
    let mut arrived = Vec::new();
    loop {
        while running.len() < st.limits.max_jobs {
            let Some((lane, job)) = st.ready.pop_front() else {
                break;
            };
            let d = delivery.clone();
            running.spawn(async move {
                let n = job.len();
                d.deliver(job).await;
                (lane, n)
            });
        }
        in_flight.set(st.held as f64);
        if !open && st.held == 0 {
            return Ok(());
        }
        let deadline = st.next_deadline();
        tokio::select! {
            Some(done) = running.join_next(), if !running.is_empty() => {
                // Every delivery that has finished by now, not one per turn of the loop.
                let mut done = Some(done);
                while let Some(d) = done {
                    match d {
                        Ok((lane, n)) => st.finished(lane, n),
                        Err(e) => {
                            // A delivery panicked: its acks were dropped (abandoned). This is
                            // a bug; stop rather than lose track of what is held, and say so
                            // to the gateway, which exits (a pipeline that silently stopped
                            // would look alive to an orchestrator).
                            return Err(format!("a delivery task failed: {e}"));
                        }
                    }
                    done = running.try_join_next();
                }
            },
            n = rx.recv_many(&mut arrived, st.limits.max_in_flight - st.held), if open && st.held < st.limits.max_in_flight => {
                if n == 0 {
                    open = false;
                    st.flush_due(true);
                } else {
                    received.increment(n as u64);
                    st.held += n;
                    for ev in arrived.drain(..) {
                        st.add(ev);
                    }
                }
            },
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => st.flush_due(false),
            _ = &mut cancelled, if open && !rx.is_closed() => {
                // Refuse new sends; what is already in the channel is still received.
                rx.close();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RetryConfig;
    use crate::engine::deliver::NamedOutput;
    use crate::invoker::{Answer, Invocation, InvokeError};
    use std::sync::Mutex;
    use switchyard_sdk::testing::CollectOutput;
    use switchyard_sdk::{Ack, Event, EventStatus};
    use tower::util::BoxCloneSyncService;

    #[derive(Default)]
    struct Seen {
        running: HashMap<String, usize>,
        max_running_per_lane: usize,
        total_running: usize,
        max_total: usize,
        order: HashMap<String, Vec<u32>>,
        batch_sizes: Vec<usize>,
    }

    fn delivery(
        seen: Arc<Mutex<Seen>>,
        lane_key: fn(&Event) -> String,
    ) -> (Arc<Delivery>, CollectOutput) {
        let svc = tower::service_fn(move |inv: Invocation| {
            let seen = seen.clone();
            async move {
                let lane = lane_key(&inv.events[0]);
                {
                    let mut s = seen.lock().unwrap();
                    s.batch_sizes.push(inv.events.len());
                    let r = s.running.entry(lane.clone()).or_default();
                    *r += 1;
                    let r = *r;
                    s.max_running_per_lane = s.max_running_per_lane.max(r);
                    s.total_running += 1;
                    s.max_total = s.max_total.max(s.total_running);
                    for e in inv.events.iter() {
                        s.order
                            .entry(lane.clone())
                            .or_default()
                            .push(e.id.parse().unwrap());
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
                let mut s = seen.lock().unwrap();
                *s.running.get_mut(&lane).unwrap() -= 1;
                s.total_running -= 1;
                Ok::<_, InvokeError>(Answer::default())
            }
        });
        let out = CollectOutput::default();
        let d = Delivery {
            pipeline: "p".into(),
            trigger_type: "test",
            trigger_name: "trigger".into(),
            function: "f".into(),
            invoker: BoxCloneSyncService::new(svc),
            batch: false,
            retry: Arc::new(RetryConfig::default()),
            outputs: vec![NamedOutput {
                name: "out".into(),
                output: Arc::new(out.clone()),
            }],
            output_names: vec!["out".to_string()].into(),
            dead_letter: None,
            metrics: crate::telemetry::PipelineMetrics::new("p", "f", ["out"]),
        };
        (Arc::new(d), out)
    }

    async fn run(
        limits: Limits,
        events: Vec<Event>,
        lane_key: fn(&Event) -> String,
    ) -> (Seen, Vec<EventStatus>) {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (d, _) = delivery(seen.clone(), lane_key);
        let (tx, rx) = mpsc::channel(4);
        let task = tokio::spawn(run_dispatcher(d, rx, limits, CancellationToken::new()));
        let mut acks = Vec::new();
        for e in events {
            let (ack, r) = Ack::channel();
            tx.send(TriggerEvent::new(e, ack)).await.unwrap();
            acks.push(r);
        }
        drop(tx);
        task.await.unwrap().unwrap();
        let statuses = acks
            .into_iter()
            .map(|mut r| r.try_recv().unwrap())
            .collect();
        let seen = Arc::try_unwrap(seen).ok().unwrap().into_inner().unwrap();
        (seen, statuses)
    }

    fn event(i: u32, partition: &str, key: &str) -> Event {
        let mut e = Event::new(i.to_string(), "s", "t");
        e.partition = Some(partition.into());
        e.key = Some(key.into());
        e
    }

    fn limits(ordering: Ordering) -> Limits {
        Limits {
            max_in_flight: 16,
            max_jobs: 8,
            max_events: 1,
            max_wait: Duration::ZERO,
            ordering,
        }
    }

    #[tokio::test]
    async fn a_delivery_that_panics_stops_the_dispatcher_with_an_error() {
        let seen = Arc::new(Mutex::new(Seen::default()));
        // The test service parses each id as a number: "boom" panics inside its delivery.
        let (d, _) = delivery(seen, |e| e.partition.clone().unwrap());
        let (tx, rx) = mpsc::channel(4);
        let task = tokio::spawn(run_dispatcher(
            d,
            rx,
            limits(Ordering::None),
            CancellationToken::new(),
        ));
        let mut e = event(1, "0", "k");
        e.id = "boom".into();
        let (ack, mut status) = Ack::channel();
        tx.send(TriggerEvent::new(e, ack)).await.unwrap();
        let err = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the dispatcher returns")
            .unwrap()
            .unwrap_err();
        assert!(err.contains("delivery task failed"), "{err}");
        // The event is not lost: its dropped ack abandons it, so the broker delivers it again.
        assert_eq!(status.try_recv().unwrap(), EventStatus::Abandoned);
    }

    #[tokio::test]
    async fn partition_order_is_kept_while_partitions_run_in_parallel() {
        let events: Vec<Event> = (0..40)
            .map(|i| event(i, &(i % 4).to_string(), "k"))
            .collect();
        let (seen, statuses) = run(limits(Ordering::Partition), events, |e| {
            e.partition.clone().unwrap()
        })
        .await;
        assert_eq!(seen.max_running_per_lane, 1, "one at a time per partition");
        assert!(seen.max_total > 1, "partitions ran in parallel");
        for (lane, order) in &seen.order {
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(order, &sorted, "partition {lane} in order");
            assert_eq!(order.len(), 10);
        }
        assert!(statuses
            .iter()
            .all(|s| matches!(s, EventStatus::Delivered(_))));
    }

    #[tokio::test]
    async fn key_order_is_kept_within_one_partition() {
        let events: Vec<Event> = (0..30)
            .map(|i| event(i, "0", &(i % 3).to_string()))
            .collect();
        let (seen, _) = run(limits(Ordering::Key), events, |e| e.key.clone().unwrap()).await;
        assert_eq!(seen.max_running_per_lane, 1);
        assert!(seen.max_total > 1, "keys of one partition ran in parallel");
        for order in seen.order.values() {
            assert!(order.windows(2).all(|w| w[0] < w[1]));
        }
    }

    #[tokio::test]
    async fn concurrency_is_bounded_without_ordering() {
        let events: Vec<Event> = (0..50).map(|i| event(i, "0", "k")).collect();
        let mut l = limits(Ordering::None);
        l.max_jobs = 3;
        let (seen, statuses) = run(l, events, |_| "all".into()).await;
        assert_eq!(seen.max_total, 3, "never more than max_jobs calls at once");
        assert_eq!(statuses.len(), 50);
    }

    #[tokio::test]
    async fn batches_fill_up_or_time_out() {
        let events: Vec<Event> = (0..7).map(|i| event(i, "0", "k")).collect();
        let mut l = limits(Ordering::Partition);
        l.max_events = 3;
        l.max_wait = Duration::from_millis(30);
        let (seen, statuses) = run(l, events, |_| "0".into()).await;
        assert_eq!(seen.batch_sizes, vec![3, 3, 1]);
        assert_eq!(seen.order["0"], (0..7).collect::<Vec<_>>());
        assert!(statuses
            .iter()
            .all(|s| matches!(s, EventStatus::Delivered(_))));
    }
}
