//! Claimed jobs on their way from the claimer to the senders. Transactional jobs are taken before
//! broadcast ones, whatever order they were claimed in: with room for a send batch per connection, a
//! queue in claim order would hold a transactional message behind every broadcast job claimed before
//! it (over a second's worth on a distant upstream). The claimer claims only when a whole claim batch
//! fits, and while the bodies waiting are fewer than [`MAX_WAITING_BYTES`], so no more jobs are held
//! than the room, and big messages do not fill the process's memory.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::domain::{MessageContent, Stream};
use crate::store::ClaimedJob;

/// The claimer claims no more while the bodies of the jobs waiting for a sender add up to this much
/// (a claim batch of big messages may go beyond it once).
pub(super) const MAX_WAITING_BYTES: usize = 256 * 1024 * 1024;

/// The queue between the claimer and the senders.
pub(super) struct HandOff {
    state: Mutex<State>,
    capacity: usize,
    /// Jobs were put (or the queue was closed): senders look again.
    arrived: Notify,
    /// Jobs were taken: the claimer looks for room again.
    freed: Notify,
}

#[derive(Default)]
struct State {
    transactional: VecDeque<ClaimedJob>,
    broadcast: VecDeque<ClaimedJob>,
    /// The bodies' sizes of the jobs waiting.
    bytes: usize,
    closed: bool,
}

impl State {
    fn len(&self) -> usize {
        self.transactional.len() + self.broadcast.len()
    }
}

impl HandOff {
    /// A queue holding at most `capacity` jobs (at least one).
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            capacity: capacity.max(1),
            arrived: Notify::new(),
            freed: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned one still holds consistent queues.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until `wanted` more jobs fit and the bodies waiting are under [`MAX_WAITING_BYTES`], and
    /// returns how many jobs to claim (at most `wanted`).
    pub(super) async fn room_for(&self, wanted: usize) -> usize {
        let wanted = wanted.clamp(1, self.capacity);
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let state = self.state();
                let free = self.capacity.saturating_sub(state.len());
                if free >= wanted && state.bytes < MAX_WAITING_BYTES {
                    return wanted;
                }
            }
            freed.await;
        }
    }

    /// Queues claimed jobs, each in its lane, in the order given.
    pub(super) fn put(&self, jobs: Vec<ClaimedJob>) {
        if jobs.is_empty() {
            return;
        }
        {
            let mut state = self.state();
            for job in jobs {
                state.bytes += body_size(&job.content);
                match job.stream {
                    Stream::Transactional => state.transactional.push_back(job),
                    Stream::Broadcast => state.broadcast.push_back(job),
                }
            }
        }
        self.arrived.notify_waiters();
    }

    /// No more jobs will be put: senders that find the queue empty stop.
    pub(super) fn close(&self) {
        self.state().closed = true;
        self.arrived.notify_waiters();
    }

    /// Waits for a job and takes it with this sender's share of the others waiting (spread over
    /// `lanes`, so that a burst keeps every connection busy), at most `most`: transactional ones
    /// first. Empty once the queue is closed and empty.
    pub(super) async fn take(&self, lanes: usize, most: usize) -> Vec<ClaimedJob> {
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            {
                let mut state = self.state();
                let waiting = state.len();
                if waiting > 0 {
                    let share = waiting.div_ceil(lanes.max(1)).clamp(1, most.max(1));
                    let mut taken = Vec::with_capacity(share);
                    while taken.len() < share {
                        let Some(job) = state
                            .transactional
                            .pop_front()
                            .or_else(|| state.broadcast.pop_front())
                        else {
                            break;
                        };
                        state.bytes = state.bytes.saturating_sub(body_size(&job.content));
                        taken.push(job);
                    }
                    drop(state);
                    self.freed.notify_waiters();
                    return taken;
                }
                if state.closed {
                    return Vec::new();
                }
            }
            arrived.await;
        }
    }
}

/// About the memory a message's body takes: its bytes as the caller wrote them, or its parts.
fn body_size(content: &MessageContent) -> usize {
    match &content.raw {
        Some(raw) => raw.len(),
        None => {
            let body = &content.body;
            body.text.as_ref().map_or(0, String::len)
                + body.html.as_ref().map_or(0, String::len)
                + body
                    .attachments
                    .iter()
                    .map(|attachment| attachment.content.len())
                    .sum::<usize>()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use time::OffsetDateTime;
    use uuid::Uuid;

    use super::*;
    use crate::domain::{Body, Envelope, Mailbox, MessageContent};
    use crate::store::JobLease;

    fn job(stream: Stream) -> ClaimedJob {
        let from = Mailbox::parse("a@example.com").unwrap();
        let to = Mailbox::parse("b@example.org").unwrap();
        ClaimedJob {
            lease: JobLease {
                id: Uuid::now_v7(),
                token: Uuid::now_v7(),
            },
            attempt: 1,
            message_id: "<m@example.com>".into(),
            caller: "c".into(),
            tags: Vec::new(),
            stream,
            content: MessageContent {
                envelope: Envelope::new(from, [vec![to], vec![], vec![], vec![]], "s".into())
                    .unwrap(),
                body: Body::new(Some("t".into()), None, Vec::new(), Vec::new()).unwrap(),
                raw: None,
            },
            created_at: OffsetDateTime::now_utc(),
            pending_recipients: None,
            reclaimed: false,
            series_base: 0,
            series_started_at: OffsetDateTime::now_utc(),
            suppressed: Vec::new(),
        }
    }

    #[tokio::test]
    async fn transactional_jobs_pass_broadcast_ones_queued_before_them() {
        let queue = HandOff::new(100);
        let broadcast: Vec<ClaimedJob> = (0..5).map(|_| job(Stream::Broadcast)).collect();
        let later = job(Stream::Transactional);
        let later_id = later.lease.id;
        queue.put(broadcast);
        queue.put(vec![later]);
        let taken = queue.take(6, 32).await;
        assert_eq!(taken.len(), 1, "six waiting over six lanes: one each");
        assert_eq!(taken[0].lease.id, later_id);
        assert_eq!(queue.take(1, 3).await.len(), 3, "at most `most`");
    }

    #[tokio::test]
    async fn the_claimer_waits_for_room_and_senders_for_jobs() {
        let queue = Arc::new(HandOff::new(4));
        queue.put((0..3).map(|_| job(Stream::Transactional)).collect());
        assert_eq!(queue.room_for(1).await, 1);
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.room_for(4).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "no room for four while three wait");
        assert_eq!(queue.take(1, 32).await.len(), 3);
        assert_eq!(waiting.await.unwrap(), 4);

        let sender = tokio::spawn({
            let queue = queue.clone();
            async move { queue.take(1, 32).await.len() }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!sender.is_finished(), "nothing to take yet");
        queue.put(vec![job(Stream::Broadcast)]);
        assert_eq!(sender.await.unwrap(), 1);

        queue.close();
        assert!(queue.take(1, 32).await.is_empty(), "closed and empty");
    }

    #[tokio::test]
    async fn big_bodies_waiting_hold_the_claimer_back() {
        let queue = Arc::new(HandOff::new(1000));
        let mut big = job(Stream::Transactional);
        big.content.raw = Some(vec![b'x'; MAX_WAITING_BYTES]);
        queue.put(vec![big]);
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.room_for(10).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !waiting.is_finished(),
            "room for jobs, but not for more bodies"
        );
        assert_eq!(queue.take(1, 32).await.len(), 1);
        assert_eq!(waiting.await.unwrap(), 10);
    }
}
