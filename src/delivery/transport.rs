//! Where a composed message goes: an SMTP upstream through its connection pool, or, with no upstream
//! configured, a local outbox directory of `.eml` files.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool::managed::{Object, PoolError};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::connection::SessionState;
use super::outcome::{AttemptOutcome, OutcomeClass, RecipientReply, Reply};
use super::pool::{SmtpManager, SmtpPool};
use super::session::{Transaction, transact};
use super::upstream::Upstream;

/// An upstream with its connection pool.
#[derive(Clone)]
pub struct Provider {
    /// Where and how to connect.
    pub upstream: Arc<Upstream>,
    /// Its connections.
    pub pool: SmtpPool,
}

/// A directory that receives every message as `ID.eml` (and its envelope as `ID.json`).
#[derive(Debug, Clone)]
pub struct Outbox {
    dir: PathBuf,
}

/// The destination of every message of this process.
#[derive(Clone)]
pub enum Transport {
    /// A real SMTP upstream.
    Smtp(Provider),
    /// Files on local disk, for development and first steps.
    Outbox(Outbox),
}

/// How long writing one outbox file may take.
const OUTBOX_TIMEOUT: Duration = Duration::from_secs(10);

impl Transport {
    /// The name used in attempt records and metrics.
    pub fn name(&self) -> &str {
        match self {
            Transport::Smtp(provider) => &provider.upstream.name,
            Transport::Outbox(_) => "outbox",
        }
    }

    /// The deadline of one exchange.
    pub fn timeout(&self) -> Duration {
        match self {
            Transport::Smtp(provider) => provider.upstream.timeout,
            Transport::Outbox(_) => OUTBOX_TIMEOUT,
        }
    }

    /// Sends messages in order, telling `each` what became of every message as soon as it is known
    /// (with the message's index), and returns how many were started: a message is started only before
    /// its `start_by` and while `stop` is not cancelled, and those after the started ones were not
    /// tried. On SMTP the messages share a connection while it lasts, each message's data going out
    /// with the next one's envelope.
    pub(super) async fn send_all(
        &self,
        messages: &[Queued<'_>],
        stop: &CancellationToken,
        mut each: impl FnMut(usize, Delivered),
    ) -> usize {
        match self {
            Transport::Smtp(provider) => provider.send_all(messages, stop, each).await,
            Transport::Outbox(outbox) => {
                for (index, message) in messages.iter().enumerate() {
                    if !message.may_start(stop) {
                        return index;
                    }
                    let clock = Clock::start();
                    let outcome = outbox.send(message.id, &message.transaction).await;
                    each(index, clock.end(outcome));
                }
                messages.len()
            }
        }
    }
}

/// A message to send: its transaction, and the latest instant at which it may start (its lease must
/// outlast the send).
pub struct Queued<'a> {
    /// The message's id.
    pub id: Uuid,
    /// Envelope and content.
    pub transaction: Transaction<'a>,
    /// Not started after this.
    pub start_by: Instant,
}

impl Queued<'_> {
    /// Whether the message may still start: before its deadline, and while the sender is not stopping.
    fn may_start(&self, stop: &CancellationToken) -> bool {
        !stop.is_cancelled() && Instant::now() <= self.start_by
    }
}

/// What became of one message, and when its attempt ran.
pub struct Delivered {
    /// The outcome.
    pub outcome: AttemptOutcome,
    /// When the attempt began.
    pub started_at: OffsetDateTime,
    /// How long it took.
    pub duration: Duration,
}

/// The clock of one attempt.
struct Clock {
    started_at: OffsetDateTime,
    started: Instant,
}

impl Clock {
    fn start() -> Self {
        Self {
            started_at: OffsetDateTime::now_utc(),
            started: Instant::now(),
        }
    }

    fn end(self, outcome: AttemptOutcome) -> Delivered {
        Delivered {
            outcome,
            started_at: self.started_at,
            duration: self.started.elapsed(),
        }
    }
}

impl Provider {
    async fn send_all(
        &self,
        messages: &[Queued<'_>],
        stop: &CancellationToken,
        mut each: impl FnMut(usize, Delivered),
    ) -> usize {
        let timeout = self.upstream.timeout;
        // Messages done so far; the next one is `messages[done]`.
        let mut done = 0;
        // Whether the next message already met a closed connection: it is retried at once on a fresh
        // one, but only once.
        let mut retried = false;
        'connections: while let Some(first) = messages.get(done) {
            if !first.may_start(stop) {
                break;
            }
            // The first message's attempt includes waiting for the connection.
            let mut clock = Some(Clock::start());
            let mut connection = match self.connection().await {
                Ok(connection) => connection,
                Err(reply) => {
                    // No connection now: every message left fails alike, to be retried later.
                    while done < messages.len() {
                        let outcome = AttemptOutcome::whole(OutcomeClass::Transient, reply.clone());
                        each(done, clock.take().unwrap_or_else(Clock::start).end(outcome));
                        done += 1;
                    }
                    break;
                }
            };
            while let Some(message) = messages.get(done) {
                if !message.may_start(stop) {
                    if connection.state() == SessionState::EnvelopeSent {
                        // Its envelope went out with the previous message's data, but its data will
                        // not: the transaction is abandoned with the connection, and nothing of this
                        // message was sent.
                        drop(Object::take(connection));
                    }
                    break 'connections;
                }
                // The next envelope goes out with this message's data only if the next message will
                // start (its data written after this message's reply) well before its deadline; if it
                // cannot start after all, the check above abandons it.
                let next = messages
                    .get(done + 1)
                    .filter(|next| {
                        !stop.is_cancelled() && Instant::now() + timeout * 2 < next.start_by
                    })
                    .map(|next| &next.transaction);
                let clock = clock.take().unwrap_or_else(Clock::start);
                let result = transact(&mut connection, &message.transaction, timeout, next).await;
                if connection.state() == SessionState::Broken {
                    // Out of the pool at once: the slot is freed and the socket closed. A message
                    // whose envelope went out with this one's data was not sent: it starts afresh on
                    // the next connection.
                    drop(Object::take(connection));
                    if result.stale && !std::mem::replace(&mut retried, true) {
                        continue 'connections;
                    }
                    let outcome = if result.stale {
                        AttemptOutcome::whole(
                            OutcomeClass::Transient,
                            Reply::none("the upstream closed the connection"),
                        )
                    } else {
                        result.outcome
                    };
                    retried = false;
                    each(done, clock.end(outcome));
                    done += 1;
                    continue 'connections;
                }
                retried = false;
                each(done, clock.end(result.outcome));
                done += 1;
                if connection.state() == SessionState::Aborted {
                    // Back to the pool, which resets it before it is used again.
                    continue 'connections;
                }
            }
        }
        done
    }

    async fn connection(&self) -> Result<Object<SmtpManager>, Reply> {
        let wait = self.upstream.timeout * 2;
        // Boxed: deadpool's `get` is a future of some 4 KiB that would otherwise be part of (and copied
        // with) every send's future.
        match tokio::time::timeout(wait, Box::pin(self.pool.get())).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(PoolError::Backend(error))) => Err(error.0),
            Ok(Err(error)) => Err(Reply::none(format!("no SMTP connection: {error}"))),
            Err(_) => Err(Reply::none("timed out waiting for an SMTP connection")),
        }
    }
}

impl Outbox {
    /// An outbox in `dir` (created on first use).
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    async fn send(&self, id: Uuid, transaction: &Transaction<'_>) -> AttemptOutcome {
        match tokio::time::timeout(OUTBOX_TIMEOUT, self.write(id, transaction)).await {
            Ok(Ok(path)) => AttemptOutcome {
                class: OutcomeClass::Sent,
                reply: Reply::none(format!("written to {}", path.display())),
                recipients: transaction
                    .recipients
                    .iter()
                    .map(|address| RecipientReply {
                        address: address.to_string(),
                        class: OutcomeClass::Sent,
                        reply: Reply::none("written to the outbox"),
                    })
                    .collect(),
            },
            Ok(Err(error)) => AttemptOutcome::whole(
                OutcomeClass::Transient,
                Reply::none(format!("writing to the outbox failed: {error}")),
            ),
            Err(_) => AttemptOutcome::whole(
                OutcomeClass::Transient,
                Reply::none("writing to the outbox timed out"),
            ),
        }
    }

    /// Writes the envelope, then the message under a temporary name renamed into place, so a reader
    /// never sees half a message.
    async fn write(&self, id: Uuid, transaction: &Transaction<'_>) -> std::io::Result<PathBuf> {
        tokio::fs::create_dir_all(&self.dir).await?;
        let envelope = serde_json::json!({
            "from": transaction.sender.to_string(),
            "to": transaction.recipients.iter().map(ToString::to_string).collect::<Vec<_>>(),
        });
        tokio::fs::write(self.dir.join(format!("{id}.json")), envelope.to_string()).await?;
        let path = self.dir.join(format!("{id}.eml"));
        let partial = self.dir.join(format!(".{id}.eml.partial"));
        tokio::fs::write(&partial, transaction.data).await?;
        tokio::fs::rename(&partial, &path).await?;
        Ok(path)
    }
}
