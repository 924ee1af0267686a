//! Templates on SQLite: every change a new version, deletion a mark on every version.

use sqlx::sqlite::SqlitePool;

use super::rows::now;
use crate::domain::TemplateContent;
use crate::store::StoreError;
use crate::store::columns;
use crate::store::records::TemplateRecord;

const COLUMNS: &str = columns::TEMPLATE;

/// Writes the next version of `name` if `live` (whether an undeleted version exists) is what the
/// write expects: a new template expects none, a change expects one. `None` when it is not. The single
/// writer makes the read and the write one step.
pub(super) async fn write(
    pool: &SqlitePool,
    name: &str,
    content: &TemplateContent,
    author: &str,
    live: bool,
) -> Result<Option<TemplateRecord>, StoreError> {
    sqlx::query(&format!(
        "INSERT INTO templates (name, version, subject, text, html, created_by, created_at)
         SELECT ?1, coalesce(max(version), 0) + 1, ?2, ?3, ?4, ?5, ?6
           FROM templates WHERE name = ?1
         HAVING (count(CASE WHEN deleted_at IS NULL THEN 1 END) > 0) = ?7
         RETURNING {COLUMNS}"
    ))
    .bind(name)
    .bind(&content.subject)
    .bind(&content.text)
    .bind(&content.html)
    .bind(author)
    .bind(now())
    .bind(live)
    .fetch_optional(pool)
    .await?
    .as_ref()
    .map(columns::template)
    .transpose()
}

pub(super) async fn get(
    pool: &SqlitePool,
    name: &str,
    version: Option<i32>,
) -> Result<Option<TemplateRecord>, StoreError> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM templates
          WHERE name = ?1 AND deleted_at IS NULL AND (?2 IS NULL OR version = ?2)
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

pub(super) async fn list(pool: &SqlitePool) -> Result<Vec<TemplateRecord>, StoreError> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM templates AS t
          WHERE deleted_at IS NULL
            AND version = (SELECT max(version) FROM templates WHERE name = t.name)
          ORDER BY name"
    ))
    .fetch_all(pool)
    .await?
    .iter()
    .map(columns::template)
    .collect()
}

pub(super) async fn delete(pool: &SqlitePool, name: &str) -> Result<bool, StoreError> {
    let result =
        sqlx::query("UPDATE templates SET deleted_at = ? WHERE name = ? AND deleted_at IS NULL")
            .bind(now())
            .bind(name)
            .execute(pool)
            .await?;
    Ok(result.rows_affected() > 0)
}
