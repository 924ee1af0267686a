//! Bounces and complaints that arrive after the upstream took a message: delivery status notifications
//! and feedback reports by mail (to the message's VERP address), and providers' notifications over
//! HTTP. Each becomes events of its message (`email.bounced`, `email.delivery_delayed`,
//! `email.complained`) and, for a hard bounce or a complaint, a suppression, in one transaction. A
//! report that cannot be read is kept for an operator and counted, never a failure of its sender.

pub mod providers;
mod report;
pub mod sns;

use serde_json::json;
use uuid::Uuid;

pub use report::{Action, RecipientStatus, Report, ReportError, parse};

use crate::domain::{EmailAddress, EventType, SuppressionReason, Verp, is_hard_bounce};
use crate::metrics::Metrics;
use crate::store::{NewEvent, NewSuppression, SharedStore, StoreError};

/// Where providers' notifications come from and what they must carry.
#[derive(Debug, Clone, Default)]
pub struct InboundSettings {
    /// URL prefixes SNS signing certificates may be fetched from; empty: SNS's own hosts.
    pub sns_cert_urls: Vec<String>,
    /// The secret Postmark's webhook carries (its basic-auth password); `None` turns the route off.
    pub postmark_secret: Option<crate::secret::Secret>,
}

/// What a report says of one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The recipient's server refused the message for good (`permanent`), or said it will not be
    /// delivered; `status` is the enhanced code where there is one.
    Bounce {
        /// The recipient.
        recipient: Option<String>,
        /// The enhanced status code.
        status: Option<String>,
        /// The server's words.
        diagnostic: Option<String>,
        /// The provider says the address is bad (its own classification), whatever the code.
        hard: bool,
    },
    /// Delivery is delayed; the reporting server keeps trying.
    Delay {
        /// The recipient.
        recipient: Option<String>,
        /// The enhanced status code.
        status: Option<String>,
        /// The server's words.
        diagnostic: Option<String>,
    },
    /// The recipient marked the message as spam.
    Complaint {
        /// The recipient.
        recipient: Option<String>,
        /// `abuse`, ...
        kind: String,
    },
}

/// Turns reports into events and suppressions.
pub struct Reports {
    store: SharedStore,
    verp: Option<Verp>,
    suppress_hard_bounces: bool,
    metrics: Metrics,
}

/// What became of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    /// Its message's events (and suppressions) are recorded.
    Recorded,
    /// It names no message posthorn knows.
    Unmatched,
    /// It could not be read; it is kept.
    Kept,
}

impl Reports {
    /// Reports about messages in `store`, which go out with return paths made by `verp`.
    pub fn new(
        store: SharedStore,
        verp: Option<Verp>,
        suppress_hard_bounces: bool,
        metrics: Metrics,
    ) -> Self {
        Self {
            store,
            verp,
            suppress_hard_bounces,
            metrics,
        }
    }

    /// Whether an address is a VERP address of a message (mail to it is a report).
    pub fn is_return_path(&self, address: &EmailAddress) -> bool {
        self.verp
            .as_ref()
            .is_some_and(|verp| verp.message(address.as_str()).is_some())
    }

    /// Whether reports are taken by mail at all (a bounce domain is configured).
    pub fn by_mail(&self) -> bool {
        self.verp.is_some()
    }

    /// A report that came by mail to `recipients` (VERP addresses).
    pub async fn ingest_mail(
        &self,
        recipients: &[EmailAddress],
        data: &[u8],
    ) -> Result<Ingested, StoreError> {
        let message = self.verp.as_ref().and_then(|verp| {
            recipients
                .iter()
                .find_map(|recipient| verp.message(recipient.as_str()))
        });
        let report = match report::parse(data) {
            Ok(report) => report,
            Err(error) => return self.keep("mail", data, &error.to_string()).await,
        };
        let (findings, original) = match report {
            Report::Delivery {
                recipients,
                original_message_id,
            } => (
                recipients
                    .into_iter()
                    .filter_map(|status| match status.action {
                        Action::Failed => Some(Finding::Bounce {
                            recipient: Some(status.recipient),
                            status: status.status,
                            diagnostic: status.diagnostic,
                            hard: false,
                        }),
                        Action::Delayed => Some(Finding::Delay {
                            recipient: Some(status.recipient),
                            status: status.status,
                            diagnostic: status.diagnostic,
                        }),
                        Action::Other => None,
                    })
                    .collect::<Vec<_>>(),
                original_message_id,
            ),
            Report::Feedback {
                kind,
                recipient,
                original_message_id,
            } => (
                vec![Finding::Complaint { recipient, kind }],
                original_message_id,
            ),
        };
        let message = match message {
            Some(message) => Some(message),
            None => match &original {
                Some(header) => self.store.message_by_header(header).await?,
                None => None,
            },
        };
        let Some(message) = message else {
            self.count("mail", "unmatched");
            return Ok(Ingested::Unmatched);
        };
        self.apply("mail", message, findings).await
    }

    /// Findings about a message a provider's notification names by its `Message-ID`.
    pub async fn ingest_notification(
        &self,
        source: &'static str,
        message_id: &str,
        findings: Vec<Finding>,
    ) -> Result<Ingested, StoreError> {
        match self.store.message_by_header(message_id).await? {
            Some(message) => self.apply(source, message, findings).await,
            None => {
                self.count(source, "unmatched");
                Ok(Ingested::Unmatched)
            }
        }
    }

    /// Keeps a report that could not be read.
    pub async fn keep(
        &self,
        source: &'static str,
        raw: &[u8],
        error: &str,
    ) -> Result<Ingested, StoreError> {
        tracing::warn!(source, error, "a report could not be read; it is kept");
        self.store.keep_report(source, raw, error).await?;
        self.count(source, "malformed");
        Ok(Ingested::Kept)
    }

    async fn apply(
        &self,
        source: &'static str,
        message: Uuid,
        findings: Vec<Finding>,
    ) -> Result<Ingested, StoreError> {
        let mut events = Vec::new();
        let mut suppressions = Vec::new();
        for finding in findings {
            let (kind, recipient, data, suppression) = match finding {
                Finding::Bounce {
                    recipient,
                    status,
                    diagnostic,
                    hard,
                } => {
                    let suppress = self.suppress_hard_bounces
                        && (hard || status.as_deref().is_some_and(is_hard_bounce));
                    (
                        EventType::Bounced,
                        recipient,
                        json!({"source": source, "status": status, "reason": diagnostic}),
                        suppress.then_some((SuppressionReason::HardBounce, diagnostic_or(&status))),
                    )
                }
                Finding::Delay {
                    recipient,
                    status,
                    diagnostic,
                } => (
                    EventType::DeliveryDelayed,
                    recipient,
                    json!({"source": source, "status": status, "reason": diagnostic}),
                    None,
                ),
                Finding::Complaint { recipient, kind } => (
                    EventType::Complained,
                    recipient,
                    json!({"source": source, "feedback_type": kind}),
                    Some((
                        SuppressionReason::Complaint,
                        Some(format!("complaint: {kind}")),
                    )),
                ),
            };
            if let (Some((reason, detail)), Some(address)) = (&suppression, &recipient) {
                suppressions.push(NewSuppression {
                    address: address.to_lowercase(),
                    reason: *reason,
                    message_id: Some(message),
                    detail: detail.clone(),
                });
            }
            events.push(NewEvent {
                message_id: message,
                kind,
                recipient,
                data,
            });
        }
        if self
            .store
            .record_report(message, events, suppressions)
            .await?
        {
            self.count(source, "recorded");
            Ok(Ingested::Recorded)
        } else {
            self.count(source, "unmatched");
            Ok(Ingested::Unmatched)
        }
    }

    fn count(&self, source: &str, result: &str) {
        self.metrics
            .reports
            .with_label_values(&[source, result])
            .inc();
    }
}

fn diagnostic_or(status: &Option<String>) -> Option<String> {
    status.as_ref().map(|status| format!("bounced: {status}"))
}
