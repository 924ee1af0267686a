//! `DELETE /v1/recipients/{address}` (`admin`): erases a recipient's data on request. Messages to that
//! recipient alone are deleted with their attempts; messages with other recipients keep their rows with
//! the address taken out (and, once finished, lose their bodies, which may name them). Nothing else is
//! touched: a suppression, whose purpose is to protect the recipient, would stay.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde::Serialize;

use super::ApiError;
use super::auth::Admin;
use super::state::AppState;
use super::views::json;
use crate::domain::{DomainError, EmailAddress};

#[derive(Serialize)]
struct ErasureView {
    address: String,
    removed: u64,
    redacted: u64,
}

/// Erases what posthorn keeps about one recipient.
pub async fn erase(
    caller: Admin,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let address = EmailAddress::parse(&path).map_err(|source| {
        ApiError::Validation(DomainError::Address {
            field: "address".into(),
            source,
        })
    })?;
    let erasure = state.store.erase_recipient(address.as_str()).await?;
    tracing::info!(
        by = %caller.sub,
        domain = %address.domain(),
        removed = erasure.removed,
        redacted = erasure.redacted,
        "recipient data erased"
    );
    json(
        StatusCode::OK,
        &ErasureView {
            address: address.as_str().to_owned(),
            removed: erasure.removed,
            redacted: erasure.redacted,
        },
    )
}
