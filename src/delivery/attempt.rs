//! One delivery attempt of one job, before and after the wire: the message composed and its envelope
//! parsed, then the outcome classified into what becomes of the job (with its metrics and log line),
//! and the attempt record to store.

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use lettre::Address;
use time::OffsetDateTime;

use super::compose::{Composition, compose};
use super::dkim::DkimSigner;
use super::outcome::{AttemptOutcome, OutcomeClass, Reply};
use super::retry::RetryPolicy;
use super::session::Transaction;
use super::transport::Delivered;
use crate::domain::{Verp, is_hard_bounce};
use crate::metrics::Metrics;
use crate::store::{AttemptRecord, ClaimedJob, Disposition, RecipientResult};

/// A job's message as it goes on the wire.
pub(super) struct Prepared {
    data: Vec<u8>,
    sender: Address,
    recipients: Vec<Address>,
}

impl Prepared {
    /// Composes the message, signs it with the DKIM keys of its `From` domain, and parses its
    /// envelope; an outcome when it cannot be sent (permanent, but for a signing failure, which is
    /// retried). With `verp`, the envelope sender is the message's VERP address, so its bounces come
    /// back to posthorn.
    pub(super) fn new(
        job: &ClaimedJob,
        verp: Option<&Verp>,
        dkim: &DkimSigner,
    ) -> Result<Self, AttemptOutcome> {
        let content = &job.content;
        let data = match &content.raw {
            // The caller's own message, checked at accept: relayed as it is.
            Some(raw) => raw.clone(),
            None => compose(&Composition {
                content,
                message_id: &job.message_id,
                date: SystemTime::from(job.created_at),
            })
            .map_err(|error| {
                AttemptOutcome::whole(OutcomeClass::Permanent, Reply::none(error.to_string()))
            })?,
        };
        // Signed last, over the exact bytes that go out.
        let data = match dkim.sign(&data) {
            Ok(Some(signed)) => signed,
            Ok(None) => data,
            Err(error) => {
                tracing::error!(error = %error, "DKIM signing failed; the message is retried");
                return Err(AttemptOutcome::whole(
                    OutcomeClass::Transient,
                    Reply::none(format!("DKIM signing failed: {error}")),
                ));
            }
        };
        let return_path = match verp {
            Some(verp) => verp.address(job.lease.id),
            None => content.envelope.return_path().as_str().to_owned(),
        };
        let sender = Address::from_str(&return_path).map_err(|_| {
            AttemptOutcome::whole(
                OutcomeClass::Permanent,
                Reply::none("sender is not encodable"),
            )
        })?;
        // Recipients on the suppression list are skipped (the outcome records them).
        let remaining = remaining_recipients(job);
        let recipients: Vec<Address> = remaining
            .iter()
            .filter(|address| !is_suppressed(job, address))
            .filter_map(|address| Address::from_str(address).ok())
            .collect();
        if recipients.is_empty() && !remaining.is_empty() {
            return Err(AttemptOutcome::whole(
                OutcomeClass::Permanent,
                Reply::none("suppressed: every recipient is on the suppression list"),
            ));
        }
        Ok(Self {
            data,
            sender,
            recipients,
        })
    }

    /// The SMTP transaction.
    pub(super) fn transaction(&self) -> Transaction<'_> {
        Transaction {
            sender: &self.sender,
            recipients: &self.recipients,
            data: &self.data,
        }
    }
}

/// The recipients this attempt is for: those left after a partial delivery, or all of them.
fn remaining_recipients(job: &ClaimedJob) -> Vec<&str> {
    match &job.pending_recipients {
        Some(pending) => pending.iter().map(String::as_str).collect(),
        None => job.content.envelope.recipients(),
    }
}

fn is_suppressed(job: &ClaimedJob, address: &str) -> bool {
    job.suppressed
        .iter()
        .any(|suppressed| suppressed.eq_ignore_ascii_case(address))
}

/// The recipients an outcome shows to be bad addresses: refused at RCPT with 5.1.x or 5.2.1, or, for
/// a message to one recipient, refused so after DATA (for several, a refusal after DATA does not say
/// whose address it is about).
fn hard_bounces(outcome: &AttemptOutcome) -> Vec<String> {
    let bad = |reply: &Reply| {
        reply.is_permanent() && reply.enhanced.as_deref().is_some_and(is_hard_bounce)
    };
    let mut addresses: Vec<String> = outcome
        .recipients
        .iter()
        .filter(|r| r.class == OutcomeClass::Permanent && bad(&r.reply))
        .map(|r| r.address.clone())
        .collect();
    let shared: Vec<&str> = outcome
        .recipients
        .iter()
        .filter(|r| r.class == OutcomeClass::Permanent && !r.reply.is_permanent())
        .map(|r| r.address.as_str())
        .collect();
    if let [only] = shared.as_slice()
        && outcome.class == OutcomeClass::Permanent
        && bad(&outcome.reply)
    {
        addresses.push((*only).to_owned());
    }
    addresses
}

/// Counts the attempt, decides what becomes of the job, logs it, and builds the attempt record.
pub(super) fn conclude(
    job: &ClaimedJob,
    delivered: Delivered,
    policy: &RetryPolicy,
    suppress_hard_bounces: bool,
    metrics: &Metrics,
) -> (AttemptRecord, Disposition) {
    let Delivered {
        provider,
        outcome,
        started_at,
        duration,
    } = delivered;
    let provider = provider.as_str();
    let _span =
        tracing::info_span!("deliver", message_id = %job.lease.id, attempt = job.attempt).entered();
    if job.reclaimed {
        // The previous holder's lease expired mid-attempt: it may have delivered already.
        metrics.possible_duplicates.inc();
    }
    metrics
        .delivery_attempts
        .with_label_values(&[provider, outcome.class.as_str()])
        .inc();
    let code = outcome
        .reply
        .code
        .map_or_else(|| "none".to_owned(), |c| c.to_string());
    metrics
        .smtp_replies
        .with_label_values(&[provider, code.as_str()])
        .inc();
    if outcome.class == OutcomeClass::Unknown {
        metrics.possible_duplicates.inc();
    }

    let disposition = dispose(job, &outcome, policy);
    match &disposition {
        Disposition::Sent => {
            metrics.messages_sent.inc();
            let age = OffsetDateTime::now_utc() - job.created_at;
            metrics
                .delivery_duration
                .observe(age.as_seconds_f64().max(0.0));
            tracing::info!(domain = %first_domain(job), reply = %outcome.reply, "message sent");
        }
        Disposition::Retry { delay, .. } => {
            metrics.messages_retried.inc();
            tracing::info!(
                domain = %first_domain(job),
                reply = %outcome.reply,
                retry_in = ?delay,
                "delivery deferred"
            );
        }
        Disposition::Failed { error } => {
            metrics.messages_failed.inc();
            tracing::warn!(domain = %first_domain(job), %error, "delivery failed");
        }
    }
    let report = AttemptRecord {
        attempt: job.attempt,
        started_at,
        duration_ms: i32::try_from(duration.as_millis()).unwrap_or(i32::MAX),
        provider: provider.to_owned(),
        outcome: outcome.class,
        smtp_code: outcome.reply.code.and_then(|c| i16::try_from(c).ok()),
        enhanced_code: outcome.reply.enhanced.clone(),
        response: Some(outcome.reply.text.clone()).filter(|text| !text.is_empty()),
        recipients: outcome
            .recipients
            .iter()
            .map(|r| RecipientResult {
                address: r.address.clone(),
                outcome: r.class,
                smtp_code: r.reply.code.and_then(|c| i16::try_from(c).ok()),
                response: Some(r.reply.text.clone()).filter(|text| !text.is_empty()),
                suppressed: false,
            })
            .chain(
                remaining_recipients(job)
                    .into_iter()
                    .filter(|address| is_suppressed(job, address))
                    .map(|address| RecipientResult {
                        address: address.to_owned(),
                        outcome: OutcomeClass::Permanent,
                        smtp_code: None,
                        response: Some("on the suppression list".into()),
                        suppressed: true,
                    }),
            )
            .collect(),
        hard_bounces: if suppress_hard_bounces {
            hard_bounces(&outcome)
        } else {
            Vec::new()
        },
    };
    (report, disposition)
}

fn dispose(job: &ClaimedJob, outcome: &AttemptOutcome, policy: &RetryPolicy) -> Disposition {
    // A message put back in the queue starts a new series: its attempts and age count from there.
    let age = (OffsetDateTime::now_utc() - job.series_started_at)
        .try_into()
        .unwrap_or(Duration::ZERO);
    let attempt = u32::try_from(job.attempt - job.series_base).unwrap_or(1);
    let retry = |recipients: Option<Vec<String>>| match policy.next_delay(attempt, age) {
        Some(delay) => Disposition::Retry {
            delay,
            recipients,
            error: outcome.reply.to_string(),
        },
        None => Disposition::Failed {
            error: format!("gave up after {attempt} attempts: {}", outcome.reply),
        },
    };
    match outcome.class {
        OutcomeClass::Sent => {
            let pending = outcome.retry_recipients();
            if pending.is_empty() {
                Disposition::Sent
            } else {
                retry(Some(pending))
            }
        }
        OutcomeClass::Transient | OutcomeClass::Unknown => retry(job.pending_recipients.clone()),
        OutcomeClass::Permanent => Disposition::Failed {
            error: outcome.reply.to_string(),
        },
    }
}

/// The first recipient's domain: logs name domains, never addresses.
fn first_domain(job: &ClaimedJob) -> &str {
    job.content.envelope.first_domain()
}
