//! `POST /v1/send/batch`: an array of messages in the JSON shape of `POST /v1/send`, queued in one
//! transaction. Strict (the default): any item that cannot be accepted refuses the batch, naming every
//! such item. Permissive: the others are queued, and each refused item is answered with its problem.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use super::auth::Sender;
use super::body::{parse_object, read_json};
use super::draft::MessageDraft;
use super::prepare::{Preparer, PreviewView, own_key, preview};
use super::send::idempotency_key;
use super::state::AppState;
use super::views::json;
use super::{ApiError, ItemProblem, Problem};
use crate::accept::{BatchError, BatchMode, BatchReceipt, BatchSubmission, Submission};
use crate::auth::Caller;
use crate::domain::{IdempotencyKey, RequestFingerprint};

/// The batch's query parameters.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchQuery {
    /// `strict` (the default) or `permissive`.
    #[serde(default)]
    mode: Option<String>,
    /// `true` validates, renders and routes every item without storing anything.
    #[serde(default)]
    dry_run: bool,
}

impl BatchQuery {
    fn mode(&self) -> Result<BatchMode, ApiError> {
        match self.mode.as_deref() {
            None | Some("strict") => Ok(BatchMode::Strict),
            Some("permissive") => Ok(BatchMode::Permissive),
            Some(other) => Err(ApiError::InvalidQuery(format!(
                "mode must be `strict` or `permissive`, not `{other}`"
            ))),
        }
    }
}

/// One item of a batch's answer.
#[derive(Serialize)]
#[serde(untagged)]
pub enum ItemView<'a> {
    /// Queued (or replayed).
    Accepted {
        /// The message's id.
        id: Uuid,
    },
    /// Dry run: what it would become.
    Preview(&'a PreviewView),
    /// Refused (permissive mode).
    Refused {
        /// Why.
        error: Problem<'a>,
    },
}

#[derive(Serialize)]
struct BatchView<'a> {
    data: Vec<ItemView<'a>>,
}

/// A batch as the caller sent it: the parsed items (or why each could not be parsed) and what the
/// keys are computed from.
pub struct ParsedBatch {
    /// Each item: a draft or its error.
    pub items: Vec<Result<(MessageDraft, serde_json::Value), ApiError>>,
    /// The whole array, for the batch's fingerprint.
    pub value: serde_json::Value,
}

/// Reads a JSON array of messages within the batch limit. Each item is read from its own text, so a
/// key given twice in one item is refused in that item, as in a single send.
pub fn parse_batch(body: &[u8], max: usize) -> Result<ParsedBatch, ApiError> {
    let first = body.iter().find(|byte| !byte.is_ascii_whitespace());
    let raw: Vec<Box<RawValue>> = match first {
        Some(b'[') => serde_json::from_slice(body)
            .map_err(|error| ApiError::MalformedJson(error.to_string()))?,
        _ => {
            return Err(
                match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                    Ok(_) => ApiError::InvalidRequest {
                        message: "the body must be a JSON array of messages".into(),
                        field: None,
                    },
                    Err(error) => ApiError::MalformedJson(error.to_string()),
                },
            );
        }
    };
    if raw.is_empty() {
        return Err(ApiError::EmptyBatch);
    }
    if raw.len() > max {
        return Err(ApiError::BatchTooLarge {
            count: raw.len(),
            max,
        });
    }
    let mut values = Vec::with_capacity(raw.len());
    let mut items = Vec::with_capacity(raw.len());
    for item in &raw {
        let value: serde_json::Value = serde_json::from_str(item.get())
            .map_err(|error| ApiError::MalformedJson(error.to_string()))?;
        items.push(
            parse_object::<MessageDraft>(item.get().as_bytes()).map(|draft| (draft, value.clone())),
        );
        values.push(value);
    }
    Ok(ParsedBatch {
        items,
        value: serde_json::Value::Array(values),
    })
}

/// Accepts a batch of messages.
pub async fn send_batch(
    caller: Sender,
    req: HttpRequest,
    query: web::Query<BatchQuery>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let mode = query.mode()?;
    let key = idempotency_key(&req)?;
    let body = read_json(&req, payload, &state.http).await?;
    let parsed = parse_batch(&body, state.http.max_batch)?;
    let fingerprint = batch_fingerprint(&parsed.value, mode);
    let outcome = accept_drafts(
        &state,
        caller.caller(),
        parsed.items,
        mode,
        query.dry_run,
        key.map(|key| (key, fingerprint)),
    )
    .await?;
    outcome.respond()
}

/// The fingerprint of a batch request: its items and its mode.
pub fn batch_fingerprint(value: &serde_json::Value, mode: BatchMode) -> RequestFingerprint {
    let mode = match mode {
        BatchMode::Strict => "strict",
        BatchMode::Permissive => "permissive",
    };
    RequestFingerprint::of(&serde_json::json!({ "batch": value, "mode": mode }))
}

/// What became of a batch, ready to be answered in either dialect.
pub struct BatchAnswer {
    /// Per item: its id, its preview (dry run) or its problem.
    pub items: Vec<Result<ItemOutcome, ApiError>>,
    /// Replayed from the batch's key.
    pub replayed: bool,
    /// Nothing was stored: a dry run.
    pub dry_run: bool,
}

/// An item that went through.
pub enum ItemOutcome {
    /// Queued (or replayed) under this id.
    Queued(Uuid),
    /// Dry run.
    Preview(Box<PreviewView>),
}

impl BatchAnswer {
    /// The answer in posthorn's dialect: 202 (200 for a dry run) with every item in request order.
    pub fn respond(&self) -> Result<HttpResponse, ApiError> {
        let data = self
            .items
            .iter()
            .map(|item| match item {
                Ok(ItemOutcome::Queued(id)) => ItemView::Accepted { id: *id },
                Ok(ItemOutcome::Preview(preview)) => ItemView::Preview(preview),
                Err(error) => ItemView::Refused {
                    error: error.problem(),
                },
            })
            .collect();
        let status = if self.dry_run {
            StatusCode::OK
        } else {
            StatusCode::ACCEPTED
        };
        let mut response = json(status, &BatchView { data })?;
        if self.replayed {
            response.headers_mut().insert(
                actix_web::http::header::HeaderName::from_static("idempotent-replayed"),
                actix_web::http::header::HeaderValue::from_static("true"),
            );
        }
        Ok(response)
    }
}

/// Prepares every item and hands the batch to the accept path (or, dry, previews each item). Strict:
/// any item refused here or there refuses the batch with every item's problem.
pub async fn accept_drafts(
    state: &AppState,
    caller: &Caller,
    items: Vec<Result<(MessageDraft, serde_json::Value), ApiError>>,
    mode: BatchMode,
    dry_run: bool,
    idempotency: Option<(IdempotencyKey, RequestFingerprint)>,
) -> Result<BatchAnswer, ApiError> {
    if !caller.has(crate::auth::Scope::Send) {
        return Err(ApiError::InsufficientScope(crate::auth::Scope::Send));
    }
    let total = items.len();
    let mut preparer = Preparer::new(state);
    let mut prepared: Vec<Result<Submission, ApiError>> = Vec::with_capacity(total);
    for item in items {
        prepared.push(match item {
            Ok((draft, value)) => match own_key(draft.idempotency_key.as_deref(), &value) {
                Ok(key) => preparer.message(draft).await.map(|message| Submission {
                    message,
                    idempotency: key,
                }),
                Err(error) => Err(error),
            },
            Err(error) => Err(error),
        });
    }
    if dry_run {
        let items: Vec<Result<ItemOutcome, ApiError>> = prepared
            .into_iter()
            .map(|item| {
                item.and_then(|submission| {
                    preview(state, caller, &submission.message)
                        .map(|view| ItemOutcome::Preview(Box::new(view)))
                })
            })
            .collect();
        if mode == BatchMode::Strict && items.iter().any(Result::is_err) {
            return Err(invalid_batch(
                total,
                items.iter().map(|item| item.as_ref().err()),
            ));
        }
        return Ok(BatchAnswer {
            items,
            replayed: false,
            dry_run: true,
        });
    }
    let mut refused: Vec<Option<ApiError>> = Vec::with_capacity(total);
    let mut submissions = Vec::with_capacity(total);
    for item in prepared {
        match item {
            Ok(submission) => {
                refused.push(None);
                submissions.push(Some(submission));
            }
            Err(error) => {
                refused.push(Some(error));
                submissions.push(None);
            }
        }
    }
    let receipt = state
        .acceptor
        .accept_batch(
            caller,
            BatchSubmission {
                items: submissions,
                idempotency,
                mode,
            },
        )
        .await;
    let BatchReceipt { items, replayed } = match receipt {
        Ok(receipt) => receipt,
        Err(BatchError::NotPermitted) => {
            return Err(ApiError::InsufficientScope(crate::auth::Scope::Send));
        }
        Err(BatchError::IdempotencyKeyReused) => return Err(ApiError::IdempotencyKeyReused),
        Err(BatchError::Store(error)) => return Err(error.into()),
        Err(BatchError::Refused(errors)) => {
            for (index, error) in errors {
                refused[index] = Some(error.into());
            }
            return Err(invalid_batch(total, refused.iter().map(Option::as_ref)));
        }
    };
    let items = items
        .into_iter()
        .zip(refused)
        .map(|(accepted, refused)| match (accepted, refused) {
            (Some(Ok(receipt)), _) => Ok(ItemOutcome::Queued(receipt.id)),
            (Some(Err(error)), _) => Err(error.into()),
            (None, Some(error)) => Err(error),
            (None, None) => Err(ApiError::Internal(
                "a batch item has neither a receipt nor an error".into(),
            )),
        })
        .collect();
    Ok(BatchAnswer {
        items,
        replayed,
        dry_run: false,
    })
}

/// The strict refusal: every failing item's problem.
fn invalid_batch<'a>(total: usize, errors: impl Iterator<Item = Option<&'a ApiError>>) -> ApiError {
    ApiError::InvalidBatch {
        total,
        errors: errors
            .enumerate()
            .filter_map(|(index, error)| error.map(|error| ItemProblem::new(index, error)))
            .collect(),
    }
}
