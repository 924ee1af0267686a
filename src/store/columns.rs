//! Reading records from rows, once for both engines: each engine says how it keeps a value (PostgreSQL
//! in native types, SQLite as text, integers and JSON text) through [`Columns`], and the records are put
//! together here.

use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use uuid::Uuid;

use super::StoreError;
use super::records::{AttemptRecord, MessageSummary, TemplateRecord};
use crate::domain::{Stream, TemplateContent, TemplateUse};

/// The columns [`summary`] reads; each engine selects them under these names.
pub(crate) const SUMMARY: [&str; 18] = [
    "id",
    "status",
    "message_id",
    "envelope",
    "tags",
    "metadata",
    "created_at",
    "updated_at",
    "send_at",
    "next_attempt_at",
    "sent_at",
    "attempt_count",
    "last_error",
    "source",
    "template",
    "template_version",
    "body_dropped_at",
    "stream",
];

/// The columns of `delivery_attempts` that [`attempt`] reads.
pub(crate) const ATTEMPT: &str = "attempt, started_at, duration_ms, provider, outcome, smtp_code, \
     enhanced_code, response, recipients";

/// The columns of `templates` that [`template`] reads.
pub(crate) const TEMPLATE: &str = "name, version, subject, text, html, created_by, created_at";

/// One row, read column by column in the types records need.
pub(crate) trait Columns {
    /// A text column.
    fn text(&self, column: &str) -> Result<String, StoreError>;
    /// A nullable text column.
    fn optional_text(&self, column: &str) -> Result<Option<String>, StoreError>;
    /// A 32-bit integer column.
    fn integer(&self, column: &str) -> Result<i32, StoreError>;
    /// A nullable 32-bit integer column.
    fn optional_integer(&self, column: &str) -> Result<Option<i32>, StoreError>;
    /// A nullable SMTP reply code.
    fn optional_code(&self, column: &str) -> Result<Option<i16>, StoreError>;
    /// An id.
    fn uuid(&self, column: &str) -> Result<Uuid, StoreError>;
    /// A point in time.
    fn time(&self, column: &str) -> Result<OffsetDateTime, StoreError>;
    /// A nullable point in time.
    fn optional_time(&self, column: &str) -> Result<Option<OffsetDateTime>, StoreError>;
    /// A JSON document.
    fn json<T: DeserializeOwned>(&self, column: &str) -> Result<T, StoreError>;
    /// A list of strings.
    fn list(&self, column: &str) -> Result<Vec<String>, StoreError>;
}

/// The [`Columns`] methods whose values every engine keeps in the column's own type.
macro_rules! native_columns {
    () => {
        fn text(&self, column: &str) -> Result<String, StoreError> {
            Ok(sqlx::Row::try_get(self, column)?)
        }

        fn optional_text(&self, column: &str) -> Result<Option<String>, StoreError> {
            Ok(sqlx::Row::try_get(self, column)?)
        }

        fn integer(&self, column: &str) -> Result<i32, StoreError> {
            Ok(sqlx::Row::try_get(self, column)?)
        }

        fn optional_integer(&self, column: &str) -> Result<Option<i32>, StoreError> {
            Ok(sqlx::Row::try_get(self, column)?)
        }

        fn optional_code(&self, column: &str) -> Result<Option<i16>, StoreError> {
            Ok(sqlx::Row::try_get(self, column)?)
        }
    };
}
pub(crate) use native_columns;

/// A message's summary from a row holding the [`SUMMARY`] columns.
pub(crate) fn summary(row: &impl Columns) -> Result<MessageSummary, StoreError> {
    Ok(MessageSummary {
        id: row.uuid("id")?,
        status: row.text("status")?.parse()?,
        message_id: row.text("message_id")?,
        envelope: row.json("envelope")?,
        tags: row.list("tags")?,
        metadata: row.json("metadata")?,
        created_at: row.time("created_at")?,
        updated_at: row.time("updated_at")?,
        send_at: row.optional_time("send_at")?,
        next_attempt_at: row.optional_time("next_attempt_at")?,
        sent_at: row.optional_time("sent_at")?,
        attempt_count: row.integer("attempt_count")?,
        last_error: row.optional_text("last_error")?,
        source: row.text("source")?.parse()?,
        template: match (
            row.optional_text("template")?,
            row.optional_integer("template_version")?,
        ) {
            (Some(name), Some(version)) => Some(TemplateUse { name, version }),
            _ => None,
        },
        body_dropped_at: row.optional_time("body_dropped_at")?,
        stream: stream(&row.text("stream")?)?,
    })
}

/// A stored stream name.
pub(crate) fn stream(text: &str) -> Result<Stream, StoreError> {
    Stream::parse(text).ok_or_else(|| StoreError::Corrupt(format!("unknown stream `{text}`")))
}

/// An attempt from a row holding the [`ATTEMPT`] columns.
pub(crate) fn attempt(row: &impl Columns) -> Result<AttemptRecord, StoreError> {
    Ok(AttemptRecord {
        attempt: row.integer("attempt")?,
        started_at: row.time("started_at")?,
        duration_ms: row.integer("duration_ms")?,
        provider: row.text("provider")?,
        outcome: row.text("outcome")?.parse()?,
        smtp_code: row.optional_code("smtp_code")?,
        enhanced_code: row.optional_text("enhanced_code")?,
        response: row.optional_text("response")?,
        recipients: row.json("recipients")?,
        hard_bounces: Vec::new(),
    })
}

/// A template version from a row holding the [`TEMPLATE`] columns.
pub(crate) fn template(row: &impl Columns) -> Result<TemplateRecord, StoreError> {
    Ok(TemplateRecord {
        name: row.text("name")?,
        version: row.integer("version")?,
        content: TemplateContent {
            subject: row.text("subject")?,
            text: row.optional_text("text")?,
            html: row.optional_text("html")?,
        },
        created_by: row.text("created_by")?,
        created_at: row.time("created_at")?,
    })
}
