//! Acknowledging the deliveries of one channel, many at a time.
//!
//! Delivery tags on a channel run 1, 2, 3, ... (one consumer per channel, no `basic.get`).
//! Every finished delivery is handed to one task per channel, in the order the engine finishes
//! them. Each turn that task takes everything handed to it since the last turn and sends:
//! - nacks and rejects at once, one frame each (they are rare: failures);
//! - one `basic.ack` with `multiple` for the run of finished tags that starts at the lowest
//!   unfinished one (the common case: deliveries finish roughly in order);
//! - finished tags behind a gap (a slower delivery before them) wait for the gap to close, but
//!   at most [`HOLD`], and no more than [`HOLD_MAX`] of them; then each gets a `basic.ack` of
//!   its own, so a slow message holds the prefetch slots of the ones after it only briefly.
//!
//! Frames of one channel go out in the order this task sends them, so a tag nacked alone is
//! never also covered by a later `multiple` ack (that ack covers only unacknowledged tags).

use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
use lapin::Acker;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long a finished tag behind a gap waits for the gap to close.
pub(crate) const HOLD: Duration = Duration::from_millis(10);
/// How many finished tags may wait behind a gap.
pub(crate) const HOLD_MAX: usize = 64;

/// What the broker is told about a finished delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Done: `basic.ack`.
    Ack,
    /// Failed for good with no dead letter: `basic.reject`, the queue's DLX takes it.
    Reject,
    /// Not finished: `basic.nack` with requeue, the broker delivers it again.
    Requeue,
}

/// One frame to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Frame {
    /// `basic.ack` of `tag`, and with `multiple` of every unacknowledged tag below it.
    Ack {
        /// The delivery tag.
        tag: u64,
        /// Whether it covers every unacknowledged tag up to `tag`.
        multiple: bool,
        /// Deliveries it settles.
        count: usize,
    },
    /// `basic.reject` of `tag`.
    Reject(u64),
    /// `basic.nack` of `tag` with requeue.
    Requeue(u64),
}

/// The bookkeeping of one channel: which tags are finished, and the lowest one that is not.
#[derive(Debug)]
pub(crate) struct Window {
    /// The lowest tag not yet finished.
    next: u64,
    /// Finished tags at or above `next`: `true` once a frame covering them was planned.
    finished: BTreeMap<u64, bool>,
}

impl Default for Window {
    fn default() -> Self {
        Self {
            next: 1,
            finished: BTreeMap::new(),
        }
    }
}

impl Window {
    /// The frames for the deliveries finished since the last turn, in the order to send them.
    /// Finished tags behind a gap are held: see [`Window::release`].
    pub(crate) fn turn(&mut self, done: impl IntoIterator<Item = (u64, Verdict)>) -> Vec<Frame> {
        let mut frames = Vec::new();
        for (tag, verdict) in done {
            if tag < self.next || self.finished.contains_key(&tag) {
                continue;
            }
            match verdict {
                Verdict::Ack => {
                    self.finished.insert(tag, false);
                }
                Verdict::Reject => {
                    self.finished.insert(tag, true);
                    frames.push(Frame::Reject(tag));
                }
                Verdict::Requeue => {
                    self.finished.insert(tag, true);
                    frames.push(Frame::Requeue(tag));
                }
            }
        }
        // The run from the lowest unfinished tag: one frame for the acks in it.
        let mut last_ack = None;
        let mut count = 0;
        while let Some(sent) = self.finished.remove(&self.next) {
            if !sent {
                last_ack = Some(self.next);
                count += 1;
            }
            self.next += 1;
        }
        if let Some(tag) = last_ack {
            frames.push(Frame::Ack {
                tag,
                multiple: count > 1,
                count,
            });
        }
        frames
    }

    /// Finished tags behind a gap with no frame yet.
    pub(crate) fn held(&self) -> usize {
        self.finished.values().filter(|sent| !**sent).count()
    }

    /// A `basic.ack` of its own for every held tag.
    pub(crate) fn release(&mut self) -> Vec<Frame> {
        self.finished
            .iter_mut()
            .filter(|(_, sent)| !**sent)
            .map(|(tag, sent)| {
                *sent = true;
                Frame::Ack {
                    tag: *tag,
                    multiple: false,
                    count: 1,
                }
            })
            .collect()
    }
}

/// A finished delivery handed to the channel's settling task.
pub(crate) struct Finished {
    pub(crate) acker: Acker,
    pub(crate) tag: u64,
    pub(crate) verdict: Verdict,
}

/// Start the settling task of one channel. `pending` counts deliveries not yet settled; it
/// drops as their frames are sent (or fail on a closed channel, when the broker redelivers).
pub(crate) fn spawn(pending: Arc<AtomicUsize>) -> mpsc::UnboundedSender<Finished> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(rx, pending));
    tx
}

async fn run(mut rx: mpsc::UnboundedReceiver<Finished>, pending: Arc<AtomicUsize>) {
    let mut window = Window::default();
    let mut ackers: BTreeMap<u64, Acker> = BTreeMap::new();
    let mut batch = Vec::new();
    let (mut messages, mut frames_sent) = (0usize, 0usize);
    // When the tags held behind a gap are released: set while any are held, so the loop ends
    // once every sender is gone and nothing is held.
    let mut release_at: Option<Instant> = None;
    let mut open = true;
    while open || release_at.is_some() {
        let mut frames = tokio::select! {
            n = rx.recv_many(&mut batch, 4096), if open => {
                open = n > 0;
                let done: Vec<_> = batch
                    .drain(..)
                    .map(|f| {
                        ackers.insert(f.tag, f.acker);
                        (f.tag, f.verdict)
                    })
                    .collect();
                window.turn(done)
            }
            _ = tokio::time::sleep_until(release_at.unwrap_or_else(Instant::now)), if release_at.is_some() => {
                window.release()
            }
        };
        let held = window.held();
        if held >= HOLD_MAX {
            frames.extend(window.release());
        }
        release_at = if held == 0 || held >= HOLD_MAX {
            None
        } else {
            // The first tag held starts the wait.
            release_at.or_else(|| Some(Instant::now() + HOLD))
        };
        for frame in frames {
            send(frame, &mut ackers, &pending).await;
            messages += frame.settles();
            frames_sent += 1;
        }
    }
    tracing::debug!(
        messages,
        frames = frames_sent,
        "channel's acknowledgements done"
    );
}

/// Send one frame with the acker of its tag.
async fn send(frame: Frame, ackers: &mut BTreeMap<u64, Acker>, pending: &AtomicUsize) {
    let Some(acker) = ackers.remove(&frame.tag()) else {
        return;
    };
    let r = match frame {
        Frame::Ack { multiple, tag, .. } => {
            if multiple {
                // The run's other tags are covered by this frame.
                *ackers = ackers.split_off(&(tag + 1));
            }
            acker.ack(BasicAckOptions { multiple }).await
        }
        Frame::Reject(_) => acker.reject(BasicRejectOptions { requeue: false }).await,
        Frame::Requeue(_) => {
            acker
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await
        }
    };
    if let Err(e) = r {
        tracing::debug!(error = %e, "ack on a closed channel; the broker redelivers the message");
    }
    pending.fetch_sub(frame.settles(), Ordering::SeqCst);
}

impl Frame {
    fn tag(self) -> u64 {
        match self {
            Frame::Ack { tag, .. } | Frame::Reject(tag) | Frame::Requeue(tag) => tag,
        }
    }

    /// How many deliveries it settles.
    fn settles(self) -> usize {
        match self {
            Frame::Ack { count, .. } => count,
            Frame::Reject(_) | Frame::Requeue(_) => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Verdict::*;

    fn ack(tag: u64, multiple: bool, count: usize) -> Frame {
        Frame::Ack {
            tag,
            multiple,
            count,
        }
    }

    #[test]
    fn a_run_from_the_lowest_tag_is_one_frame() {
        let mut w = Window::default();
        assert_eq!(
            w.turn([(2, Ack), (1, Ack), (3, Ack)]),
            vec![ack(3, true, 3)]
        );
        assert_eq!(w.turn([(4, Ack)]), vec![ack(4, false, 1)]);
        assert_eq!(w.held(), 0);
    }

    #[test]
    fn tags_behind_a_gap_wait_for_it_to_close() {
        let mut w = Window::default();
        // 1 is still running: 2 and 3 are held.
        assert_eq!(w.turn([(2, Ack), (3, Ack)]), vec![]);
        assert_eq!(w.held(), 2);
        // 1 finishes: one frame for all three.
        assert_eq!(w.turn([(1, Ack)]), vec![ack(3, true, 3)]);
        assert_eq!(w.held(), 0);
    }

    #[test]
    fn released_tags_are_acked_alone_and_never_twice() {
        let mut w = Window::default();
        assert_eq!(w.turn([(2, Ack), (3, Ack)]), vec![]);
        assert_eq!(w.release(), vec![ack(2, false, 1), ack(3, false, 1)]);
        assert_eq!(w.held(), 0);
        assert_eq!(w.release(), vec![]);
        // 1 finishes: only 1 is left to ack; the window moves past 3.
        assert_eq!(w.turn([(1, Ack)]), vec![ack(1, false, 1)]);
        assert_eq!(w.turn([(5, Ack), (4, Ack)]), vec![ack(5, true, 2)]);
    }

    #[test]
    fn nacks_and_rejects_go_first_and_alone() {
        let mut w = Window::default();
        assert_eq!(
            w.turn([(1, Ack), (2, Requeue), (3, Ack), (4, Reject)]),
            vec![Frame::Requeue(2), Frame::Reject(4), ack(3, true, 2)]
        );
        assert_eq!(w.turn([(5, Ack)]), vec![ack(5, false, 1)]);
        // A nack behind a gap goes at once; the ack after it waits.
        assert_eq!(w.turn([(7, Requeue), (8, Ack)]), vec![Frame::Requeue(7)]);
        assert_eq!(w.held(), 1);
        assert_eq!(w.turn([(6, Ack)]), vec![ack(8, true, 2)]);
    }

    #[test]
    fn a_tag_seen_twice_is_ignored() {
        let mut w = Window::default();
        assert_eq!(w.turn([(1, Ack)]), vec![ack(1, false, 1)]);
        assert_eq!(w.turn([(1, Ack)]), vec![]);
        assert_eq!(w.turn([(3, Ack)]), vec![]);
        assert_eq!(w.turn([(3, Requeue)]), vec![]);
        assert_eq!(w.release(), vec![ack(3, false, 1)]);
    }
}
