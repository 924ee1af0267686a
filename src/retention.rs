//! Retention: finished messages lose their bodies (and attachments, and the bytes of messages callers
//! wrote themselves) after one period and their rows (with their attempts) after another.
//!
//! Each replica runs the passes; they only ever take what is due, in small batches with a pause between
//! them, so the queue's own statements are never held up for long and replicas working at once only
//! share the work.

use std::time::Duration;

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::metrics::Metrics;
use crate::store::{RetentionPass, SharedStore, StoreError};

/// How long finished messages keep their parts.
#[derive(Debug, Clone)]
pub struct RetentionSettings {
    /// After this long, bodies and attachments are dropped; `None` keeps them.
    pub bodies: Option<Duration>,
    /// After this long, messages are deleted; `None` keeps them.
    pub messages: Option<Duration>,
    /// How often the passes run.
    pub interval: Duration,
}

/// Messages one statement takes.
const BATCH: u32 = 500;

/// The pause between two batches: the queue's statements go first.
const PAUSE: Duration = Duration::from_millis(50);

/// Where each pass may start: everything before it was done by an earlier pass.
#[derive(Default)]
struct Floors {
    bodies: Uuid,
    messages: Uuid,
}

/// Runs the retention passes until `stop`.
pub async fn run(
    store: SharedStore,
    settings: RetentionSettings,
    metrics: Metrics,
    stop: CancellationToken,
) {
    if settings.bodies.is_none() && settings.messages.is_none() {
        return;
    }
    let mut floors = Floors::default();
    let mut interval = tokio::time::interval(settings.interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = stop.cancelled() => return,
        }
        if let Err(error) = run_once(&store, &settings, &metrics, &mut floors, &stop).await {
            tracing::warn!(
                error = %crate::telemetry::error_chain(&error),
                "a retention pass failed; it runs again later"
            );
        }
    }
}

async fn run_once(
    store: &SharedStore,
    settings: &RetentionSettings,
    metrics: &Metrics,
    floors: &mut Floors,
    stop: &CancellationToken,
) -> Result<(), StoreError> {
    let now = OffsetDateTime::now_utc();
    for kind in [Kind::Bodies, Kind::Messages] {
        let (after, floor) = match kind {
            Kind::Bodies => (settings.bodies, &mut floors.bodies),
            Kind::Messages => (settings.messages, &mut floors.messages),
        };
        let Some(after) = after else { continue };
        let finished_before = now - after;
        let done = pass(*floor, stop, |from| async move {
            match kind {
                Kind::Bodies => store.drop_bodies(finished_before, from, BATCH).await,
                Kind::Messages => store.delete_finished(finished_before, from, BATCH).await,
            }
        })
        .await?;
        *floor = done.floor;
        if done.affected > 0 {
            metrics
                .retention
                .with_label_values(&[kind.label()])
                .inc_by(done.affected);
            tracing::info!(
                messages = done.affected,
                action = kind.label(),
                "retention pass"
            );
        }
    }
    Ok(())
}

/// What a pass does to finished messages.
#[derive(Clone, Copy)]
enum Kind {
    /// Drops their bodies.
    Bodies,
    /// Deletes them.
    Messages,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Bodies => "bodies_dropped",
            Kind::Messages => "messages_deleted",
        }
    }
}

/// What a whole pass did, and where the next one may start.
struct Done {
    affected: u64,
    floor: Uuid,
}

/// Runs batches from `floor` until the store says the pass is over (or `stop`).
async fn pass<F, Fut>(
    floor: Uuid,
    stop: &CancellationToken,
    mut batch: F,
) -> Result<Done, StoreError>
where
    F: FnMut(Uuid) -> Fut,
    Fut: std::future::Future<Output = Result<RetentionPass, StoreError>>,
{
    let mut from = floor;
    let mut affected = 0;
    let mut next_floor = None;
    loop {
        let RetentionPass {
            affected: now,
            resume,
            first_kept,
        } = batch(from).await?;
        affected += now;
        next_floor = next_floor.or(first_kept);
        let Some(resume) = resume else {
            // Everything after the first message kept was done: the next pass starts there.
            return Ok(Done {
                affected,
                floor: next_floor.unwrap_or(from.max(floor)),
            });
        };
        from = resume;
        tokio::select! {
            () = tokio::time::sleep(PAUSE) => {}
            () = stop.cancelled() => return Ok(Done { affected, floor }),
        }
    }
}
