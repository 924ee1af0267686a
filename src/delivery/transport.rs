//! Where a composed message goes: an SMTP upstream through its connection pool, or, with no upstream
//! configured, a local outbox directory of `.eml` files.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use deadpool::managed::{Object, PoolError};
use uuid::Uuid;

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

    /// Delivers one message.
    pub(super) async fn send(&self, id: Uuid, transaction: &Transaction<'_>) -> AttemptOutcome {
        match self {
            Transport::Smtp(provider) => provider.send(transaction).await,
            Transport::Outbox(outbox) => outbox.send(id, transaction).await,
        }
    }
}

impl Provider {
    async fn send(&self, transaction: &Transaction<'_>) -> AttemptOutcome {
        let timeout = self.upstream.timeout;
        // One immediate retry on a fresh connection when a pooled one turns out to be closed.
        for _ in 0..2 {
            let mut connection = match self.connection().await {
                Ok(connection) => connection,
                Err(reply) => return AttemptOutcome::whole(OutcomeClass::Transient, reply),
            };
            let result = transact(&mut connection, transaction, timeout).await;
            if connection.broken {
                // Out of the pool at once: the slot is freed and the socket closed.
                drop(Object::take(connection));
            }
            if result.stale {
                continue;
            }
            return result.outcome;
        }
        AttemptOutcome::whole(
            OutcomeClass::Transient,
            Reply::none("the upstream closed the connection"),
        )
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
