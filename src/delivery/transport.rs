//! Where a composed message goes: SMTP providers through their connection pools (chosen by the
//! message's route, failing over while a provider cannot be reached), or, with no provider configured,
//! a local outbox directory of `.eml` files.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool::managed::{Object, PoolError};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::breaker::Breaker;
use super::connection::SessionState;
use super::lease::HeldLeases;
use super::outcome::{AttemptOutcome, OutcomeClass, RecipientReply, Reply};
use super::pool::{SmtpManager, SmtpPool};
use super::rate::Pacer;
use super::routing::{Choice, Providers};
use super::session::{Transaction, transact};
use super::upstream::Upstream;
use crate::domain::RouteFacts;

/// An upstream with its connection pool and its circuit breaker.
#[derive(Clone)]
pub struct Provider {
    /// Where and how to connect.
    pub upstream: Arc<Upstream>,
    /// Its connections.
    pub pool: SmtpPool,
    /// Whether it is taking messages.
    pub breaker: Arc<Breaker>,
    /// Its rate limit's pacing, when it has one.
    pub pacer: Option<Arc<Pacer>>,
}

/// A directory that receives every message as `ID.eml` (and its envelope as `ID.json`).
#[derive(Debug, Clone)]
pub struct Outbox {
    dir: PathBuf,
}

/// The destination of every message of this process.
#[derive(Clone)]
pub enum Transport {
    /// SMTP providers, chosen by route.
    Smtp(Providers),
    /// Files on local disk, for development and first steps.
    Outbox(Outbox),
}

/// How long writing one outbox file may take.
const OUTBOX_TIMEOUT: Duration = Duration::from_secs(10);

impl Transport {
    /// How many SMTP connections all providers together may hold; `None` for the outbox.
    pub fn connections(&self) -> Option<usize> {
        match self {
            Transport::Smtp(providers) => Some(
                providers
                    .list()
                    .iter()
                    .map(|provider| provider.upstream.max_connections)
                    .sum(),
            ),
            Transport::Outbox(_) => None,
        }
    }

    /// The provider a message with these facts would go to now, by name (`outbox` without SMTP).
    pub fn provider_for(&self, facts: &RouteFacts<'_>) -> Option<&str> {
        match self {
            Transport::Smtp(providers) => providers.first_choice(facts),
            Transport::Outbox(_) => Some("outbox"),
        }
    }

    /// Sends messages, telling `each` what became of every message as soon as it is known (with the
    /// message's index), and returns those not started, each with how long it should wait: a message
    /// is started only while its lease holds and `stop` is not cancelled, and only while a
    /// provider of its route takes messages. On SMTP the messages for one provider share a connection
    /// while it lasts, each message's data going out with the next one's envelope; messages a provider
    /// could not be reached for go to the next provider of their route in the same attempt.
    pub(super) async fn send_all(
        &self,
        messages: &[Queued<'_>],
        stop: &CancellationToken,
        mut each: impl FnMut(usize, Delivered),
    ) -> Vec<Unsent> {
        match self {
            Transport::Smtp(providers) => send_routed(providers, messages, stop, each).await,
            Transport::Outbox(outbox) => {
                for (index, message) in messages.iter().enumerate() {
                    if !message.may_start(stop) {
                        return (index..messages.len())
                            .map(|index| Unsent {
                                index,
                                wait: Duration::ZERO,
                            })
                            .collect();
                    }
                    let clock = Clock::start();
                    let outcome = outbox.send(message.id, &message.transaction).await;
                    each(index, clock.end("outbox", outcome));
                }
                Vec::new()
            }
        }
    }
}

/// A message that was not started, and how long it should wait before it is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsent {
    /// Its index.
    pub index: usize,
    /// How long to wait: zero when its time ran out or the sender stops, the rest of a cool-down when
    /// every provider of its route has its circuit open.
    pub wait: Duration,
}

/// A message still to place in [`send_routed`].
struct Pending {
    index: usize,
    /// The providers that could not be reached for it in this attempt.
    tried: Vec<usize>,
    /// Why the last of them could not.
    last: Option<(String, Reply)>,
}

/// Sends each message through the first provider of its route that takes messages, grouping the
/// messages of one provider onto its connections, and failing over to the route's next provider for
/// the messages a provider could not be reached for.
async fn send_routed(
    providers: &Providers,
    messages: &[Queued<'_>],
    stop: &CancellationToken,
    mut each: impl FnMut(usize, Delivered),
) -> Vec<Unsent> {
    let mut left: Vec<Pending> = (0..messages.len())
        .map(|index| Pending {
            index,
            tried: Vec::new(),
            last: None,
        })
        .collect();
    let mut unsent = Vec::new();
    while !left.is_empty() {
        // Groups in the order of their first message, each in the messages' order.
        let mut groups: Vec<(usize, Vec<Pending>)> = Vec::new();
        for pending in left.drain(..) {
            let index = pending.index;
            match providers.choose(&messages[index].route, &pending.tried) {
                Choice::Provider(chosen) => {
                    match groups.iter_mut().find(|(provider, _)| *provider == chosen) {
                        Some((_, group)) => group.push(pending),
                        None => groups.push((chosen, vec![pending])),
                    }
                }
                Choice::Wait(wait) => unsent.push(Unsent { index, wait }),
                // Every provider tried could not be reached, and no other takes messages now (the
                // last one's failure is the attempt's); or no route takes it any more.
                Choice::Exhausted | Choice::NoRoute => {
                    let (provider, reply) = pending.last.unwrap_or_else(|| {
                        let reply = Reply::none(
                            "no route takes this message (the routes changed after it was accepted)",
                        );
                        ("none".to_owned(), reply)
                    });
                    let outcome = AttemptOutcome::whole(OutcomeClass::Transient, reply);
                    each(index, Clock::start().end(&provider, outcome));
                }
            }
        }
        for (chosen, group) in groups {
            let provider = providers.get(chosen);
            let queued: Vec<&Queued<'_>> = group
                .iter()
                .map(|pending| &messages[pending.index])
                .collect();
            let sent = provider
                .send_all(&queued, stop, |position, delivered| {
                    each(group[position].index, delivered)
                })
                .await;
            let rest = group.into_iter().skip(sent.done);
            match sent.unreachable {
                // Not reached: the rest try the route's next provider.
                Some(reply) => left.extend(rest.map(|mut pending| {
                    pending.tried.push(chosen);
                    pending.last = Some((provider.name().to_owned(), reply.clone()));
                    pending
                })),
                None => unsent.extend(rest.map(|pending| Unsent {
                    index: pending.index,
                    wait: Duration::ZERO,
                })),
            }
        }
    }
    unsent.sort_by_key(|unsent| unsent.index);
    unsent
}

/// A message to send: its transaction, and the lease it is sent under.
pub struct Queued<'a> {
    /// The message's id.
    pub id: Uuid,
    /// Its job's lease.
    pub lease: crate::store::JobLease,
    /// The leases of this process, to tell whether that one still holds.
    pub held: &'a HeldLeases,
    /// What its route is chosen by.
    pub route: RouteFacts<'a>,
    /// Envelope and content.
    pub transaction: Transaction<'a>,
}

impl Queued<'_> {
    /// Whether the message may still start: while its lease holds, and the sender is not stopping.
    fn may_start(&self, stop: &CancellationToken) -> bool {
        !stop.is_cancelled() && self.held.may_start(&self.lease)
    }
}

/// What became of one message, and when its attempt ran.
pub struct Delivered {
    /// The provider it went to (`outbox`, or `none` when no provider could take it).
    pub provider: String,
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

    fn end(self, provider: &str, outcome: AttemptOutcome) -> Delivered {
        Delivered {
            provider: provider.to_owned(),
            outcome,
            started_at: self.started_at,
            duration: self.started.elapsed(),
        }
    }
}

/// How far one provider got with its messages.
struct ProviderSent {
    /// Messages done (told to `each`), from the first.
    done: usize,
    /// The provider could not be reached for the next one: why.
    unreachable: Option<Reply>,
}

impl Provider {
    /// The name in attempt records and metrics.
    pub fn name(&self) -> &str {
        &self.upstream.name
    }

    async fn send_all(
        &self,
        messages: &[&Queued<'_>],
        stop: &CancellationToken,
        mut each: impl FnMut(usize, Delivered),
    ) -> ProviderSent {
        let timeouts = &self.upstream.timeouts;
        let name = self.name();
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
            let mut connection = match self.connection(stop).await {
                // Stopping while waiting: this message and the rest are not started.
                None => break,
                Some(Ok(connection)) => {
                    self.breaker.succeeded();
                    connection
                }
                Some(Err(reply)) => {
                    // No connection now: the caller sends the rest elsewhere, or fails them alike.
                    self.breaker.failed(&reply.to_string());
                    return ProviderSent {
                        done,
                        unreachable: Some(reply),
                    };
                }
            };
            while let Some(message) = messages.get(done) {
                // A rate-limited provider's message waits for its slot (a sender stopping does not).
                if let Some(pacer) = &self.pacer {
                    tokio::select! {
                        () = pacer.wait_turn() => {}
                        () = stop.cancelled() => {}
                    }
                }
                if !message.may_start(stop) {
                    if connection.state() == SessionState::EnvelopeSent {
                        // Its envelope went out with the previous message's data, but its data will
                        // not: the transaction is abandoned with the connection, and nothing of this
                        // message was sent.
                        drop(Object::take(connection));
                    }
                    break 'connections;
                }
                // The next envelope goes out with this message's data only if the next message may
                // start now (its data is written after this message's reply); if it cannot start
                // after all, the check above abandons it.
                // Not for a rate-limited provider: each message waits for its own slot.
                let next = messages
                    .get(done + 1)
                    .filter(|next| self.pacer.is_none() && next.may_start(stop))
                    .map(|next| &next.transaction);
                let clock = clock.take().unwrap_or_else(Clock::start);
                let still_ours = || message.held.may_start(&message.lease);
                let result = transact(
                    &mut connection,
                    &message.transaction,
                    timeouts,
                    next,
                    &still_ours,
                )
                .await;
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
                    each(done, clock.end(name, outcome));
                    done += 1;
                    continue 'connections;
                }
                retried = false;
                each(done, clock.end(name, result.outcome));
                done += 1;
                if connection.state() == SessionState::Aborted {
                    // Back to the pool, which resets it before it is used again.
                    continue 'connections;
                }
            }
        }
        ProviderSent {
            done,
            unreachable: None,
        }
    }

    /// A free connection, or a new one opened within the provider's opening deadline (the pool's
    /// `create` keeps it, and a reused connection's check has its own). Waiting for one of the
    /// provider's connections to come free has no deadline: every connection in use is bounded by its
    /// sends' deadlines, and a sender whose batch waits behind the others' (a rate-limited provider
    /// sends one message per slot) must not take that wait for a failure of the provider. `None` when
    /// `stop` comes first.
    async fn connection(
        &self,
        stop: &CancellationToken,
    ) -> Option<Result<Object<SmtpManager>, Reply>> {
        // Boxed: deadpool's `get` is a future of some 4 KiB that would otherwise be part of (and copied
        // with) every send's future.
        tokio::select! {
            got = Box::pin(self.pool.get()) => Some(match got {
                Ok(connection) => Ok(connection),
                Err(PoolError::Backend(error)) => Err(error.0),
                Err(error) => Err(Reply::none(format!("no SMTP connection: {error}"))),
            }),
            () = stop.cancelled() => None,
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
