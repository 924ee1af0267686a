//! Templates: every change a new version, deletion a mark on every version.

use sqlx::postgres::PgPool;

use crate::domain::TemplateContent;
use crate::store::StoreError;
use crate::store::columns;
use crate::store::records::TemplateRecord;

const COLUMNS: &str = columns::TEMPLATE;

/// How often a write that lost a race for the next version number is tried again.
const VERSION_RACES: usize = 5;

/// Writes the next version of `name` if `live` (whether an undeleted version exists) is what the
/// write expects: a new template expects none, a change expects one. `None` when it is not.
pub(super) async fn write(
    pool: &PgPool,
    name: &str,
    content: &TemplateContent,
    author: &str,
    live: bool,
) -> Result<Option<TemplateRecord>, StoreError> {
    for _ in 0..VERSION_RACES {
        let row = sqlx::query(&format!(
            "WITH current AS (
                 SELECT coalesce(max(version), 0) AS version,
                        count(*) FILTER (WHERE deleted_at IS NULL) > 0 AS live
                   FROM templates WHERE name = $1
             )
             INSERT INTO templates (name, version, subject, text, html, created_by)
             SELECT $1, current.version + 1, $2, $3, $4, $5 FROM current WHERE current.live = $6
             ON CONFLICT (name, version) DO NOTHING
             RETURNING {COLUMNS}"
        ))
        .bind(name)
        .bind(&content.subject)
        .bind(&content.text)
        .bind(&content.html)
        .bind(author)
        .bind(live)
        .fetch_optional(pool)
        .await?;
        if let Some(row) = row {
            return Ok(Some(columns::template(&row)?));
        }
        // Nothing written: either the template is not in the state expected, or another write took
        // the version number first (then its state is read again).
        let (exists,): (bool,) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM templates WHERE name = $1 AND deleted_at IS NULL)",
        )
        .bind(name)
        .fetch_one(pool)
        .await?;
        if exists != live {
            return Ok(None);
        }
    }
    Err(StoreError::Conflict(
        "the template changed too often at once; try again".into(),
    ))
}

pub(super) async fn get(
    pool: &PgPool,
    name: &str,
    version: Option<i32>,
) -> Result<Option<TemplateRecord>, StoreError> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM templates
          WHERE name = $1 AND deleted_at IS NULL AND ($2::integer IS NULL OR version = $2)
          ORDER BY version DESC LIMIT 1"
    ))
    .bind(name)
    .bind(version)
    .fetch_optional(pool)
    .await?
    .as_ref()
    .map(columns::template)
    .transpose()
}

pub(super) async fn list(pool: &PgPool) -> Result<Vec<TemplateRecord>, StoreError> {
    sqlx::query(&format!(
        "SELECT DISTINCT ON (name) {COLUMNS} FROM templates
          WHERE deleted_at IS NULL ORDER BY name, version DESC"
    ))
    .fetch_all(pool)
    .await?
    .iter()
    .map(columns::template)
    .collect()
}

pub(super) async fn delete(pool: &PgPool, name: &str) -> Result<bool, StoreError> {
    let result = sqlx::query(
        "UPDATE templates SET deleted_at = now() WHERE name = $1 AND deleted_at IS NULL",
    )
    .bind(name)
    .execute(pool)
    .await?;
    Ok(result.rows_affected() > 0)
}
