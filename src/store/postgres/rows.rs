//! How PostgreSQL keeps the values records are read from: native types, `jsonb` and `text[]`.

use serde::de::DeserializeOwned;
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::store::StoreError;
use crate::store::columns::{Columns, native_columns};

/// The summary columns, from the view `message_states` (migration `20261201000001`): a message with its
/// current state, put together from its job and its last attempt.
pub(super) fn summary_columns() -> String {
    crate::store::columns::SUMMARY.join(", ")
}

impl Columns for PgRow {
    native_columns!();

    fn uuid(&self, column: &str) -> Result<Uuid, StoreError> {
        Ok(self.try_get(column)?)
    }

    fn time(&self, column: &str) -> Result<OffsetDateTime, StoreError> {
        Ok(self.try_get(column)?)
    }

    fn optional_time(&self, column: &str) -> Result<Option<OffsetDateTime>, StoreError> {
        Ok(self.try_get(column)?)
    }

    fn json<T: DeserializeOwned>(&self, column: &str) -> Result<T, StoreError> {
        let Json(value) = self.try_get(column)?;
        Ok(value)
    }

    fn list(&self, column: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.try_get(column)?)
    }
}
