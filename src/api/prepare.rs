//! From a parsed draft to a message ready for the accept path: its template loaded (once per request,
//! however many items use it) and rendered, its own idempotency key read; and, for a dry run, what it
//! would become on the wire.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::ApiError;
use super::draft::MessageDraft;
use super::state::AppState;
use crate::auth::Caller;
use crate::domain::{
    IdempotencyKey, NewMessage, RequestFingerprint, TemplateUse, validate_template_name,
};
use crate::store::TemplateRecord;

/// Prepares the messages of one request.
pub struct Preparer<'a> {
    state: &'a AppState,
    now: OffsetDateTime,
    templates: HashMap<(String, Option<i32>), Option<TemplateRecord>>,
}

impl<'a> Preparer<'a> {
    /// A preparer for a request arriving now.
    pub fn new(state: &'a AppState) -> Self {
        Self {
            state,
            now: OffsetDateTime::now_utc(),
            templates: HashMap::new(),
        }
    }

    /// Renders the draft's template, if it names one, and validates the result.
    pub async fn message(&mut self, mut draft: MessageDraft) -> Result<NewMessage, ApiError> {
        if let Some(wanted) = &draft.template {
            let key = (wanted.name.clone(), wanted.version);
            if !self.templates.contains_key(&key) {
                let found = if validate_template_name(&wanted.name).is_ok() {
                    self.state.store.template(&key.0, key.1).await?
                } else {
                    None
                };
                self.templates.insert(key.clone(), found);
            }
            let template = self
                .templates
                .get(&key)
                .and_then(Option::as_ref)
                .ok_or_else(|| ApiError::TemplateNotFound(describe(&key.0, key.1)))?;
            draft.render(template)?;
        }
        Ok(draft.into_message(self.state.acceptor.limits(), self.now)?)
    }
}

fn describe(name: &str, version: Option<i32>) -> String {
    match version {
        Some(version) => format!("{name}` in version `{version}"),
        None => name.to_owned(),
    }
}

/// A message's own key (`idempotency_key` in its JSON), fingerprinted with the JSON it came in.
pub fn own_key(
    key: Option<&str>,
    value: &serde_json::Value,
) -> Result<Option<(IdempotencyKey, RequestFingerprint)>, ApiError> {
    key.map(|key| {
        let key = IdempotencyKey::parse(key).map_err(|error| ApiError::InvalidRequest {
            message: format!(
                "idempotency_key {}",
                error.to_string().trim_start_matches("Idempotency-Key ")
            ),
            field: Some("idempotency_key".into()),
        })?;
        Ok((key, RequestFingerprint::of(value)))
    })
    .transpose()
}

/// Whether a request is a dry run: `?dry_run=true`.
#[derive(Debug, Default, Deserialize)]
pub struct DryRun {
    /// `true` validates, renders and routes without storing anything.
    #[serde(default)]
    pub dry_run: bool,
}

/// What a dry run answers for one message.
#[derive(Debug, Serialize)]
pub struct PreviewView {
    /// Always `true`: nothing was stored.
    pub dry_run: bool,
    /// The message as it would be sent after DATA (its `Date` is the time of the dry run).
    pub mime: String,
    /// The SMTP envelope.
    pub envelope: EnvelopeView,
    /// The provider that would take it; `null` when none is configured (it would wait in the queue).
    pub provider: Option<String>,
    /// The template it was rendered from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<TemplateUse>,
}

/// `MAIL FROM` and `RCPT TO`.
#[derive(Debug, Serialize)]
pub struct EnvelopeView {
    /// The envelope sender.
    pub mail_from: String,
    /// The envelope recipients.
    pub rcpt_to: Vec<String>,
}

/// Checks that `caller` may send `message` and shows what it would become; stores nothing.
pub fn preview(
    state: &AppState,
    caller: &Caller,
    message: &NewMessage,
) -> Result<PreviewView, ApiError> {
    state.acceptor.permit(caller, message)?;
    let preview = crate::delivery::preview(message, &caller.sub, state.transport.as_ref())
        .map_err(|error| ApiError::Internal(Box::new(error)))?;
    Ok(PreviewView {
        dry_run: true,
        mime: String::from_utf8_lossy(&preview.data).into_owned(),
        envelope: EnvelopeView {
            mail_from: preview.mail_from,
            rcpt_to: preview.rcpt_to,
        },
        provider: preview.provider,
        template: message.template.clone(),
    })
}
