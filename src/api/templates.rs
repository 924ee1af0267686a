//! Templates: `POST /v1/templates`, `GET /v1/templates`, `GET|PUT|DELETE /v1/templates/{name}` and
//! `POST /v1/templates/{name}/render`. Deployment-wide: `admin` changes them, `send` uses and previews
//! them. Every change is a new version; a message records the version it was rendered from.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::ApiError;
use super::auth::{Admin, Sender};
use super::body::{parse_object, read_json};
use super::state::AppState;
use super::views::{created, json};
use crate::domain::{TemplateContent, validate_template_name};
use crate::store::TemplateRecord;

/// `POST /v1/templates`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTemplate {
    name: String,
    subject: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    html: Option<String>,
}

/// The parts of a template as a request gives them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateParts {
    subject: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    html: Option<String>,
}

impl TemplateParts {
    fn validate(self) -> Result<TemplateContent, ApiError> {
        TemplateContent::new(self.subject, self.text, self.html).map_err(ApiError::InvalidTemplate)
    }
}

/// `POST /v1/templates/{name}/render`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenderRequest {
    #[serde(default)]
    version: Option<i32>,
    #[serde(default)]
    variables: Option<serde_json::Value>,
}

/// `?version=N`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionQuery {
    #[serde(default)]
    version: Option<i32>,
}

#[derive(Serialize)]
struct TemplateList {
    items: Vec<TemplateRecord>,
}

#[derive(Serialize)]
struct RenderedView {
    name: String,
    version: i32,
    subject: String,
    text: Option<String>,
    html: Option<String>,
}

async fn body<T: serde::de::DeserializeOwned>(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<T, ApiError> {
    let body = read_json(req, payload, &state.http).await?;
    parse_object(&body)
}

fn name(path: &str) -> Result<&str, ApiError> {
    validate_template_name(path).map_err(|_| ApiError::NotFound)?;
    Ok(path)
}

/// Creates a template (version 1, or the next version of a deleted one).
pub async fn create(
    caller: Admin,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let request: NewTemplate = body(&req, payload, &state).await?;
    validate_template_name(&request.name).map_err(ApiError::InvalidTemplate)?;
    let content = TemplateParts {
        subject: request.subject,
        text: request.text,
        html: request.html,
    }
    .validate()?;
    let record = state
        .store
        .create_template(&request.name, &content, &caller.sub)
        .await?
        .ok_or_else(|| ApiError::TemplateExists(request.name.clone()))?;
    created(&format!("/v1/templates/{}", record.name), &record)
}

/// Every template, in its newest version.
pub async fn list(_caller: Sender, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let items = state.store.templates().await?;
    json(StatusCode::OK, &TemplateList { items })
}

/// A template's newest version, or `?version=N`.
pub async fn get(
    _caller: Sender,
    path: web::Path<String>,
    query: web::Query<VersionQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let record = state
        .store
        .template(name(&path)?, query.version)
        .await?
        .ok_or(ApiError::NotFound)?;
    json(StatusCode::OK, &record)
}

/// Stores the next version of a template.
pub async fn update(
    caller: Admin,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let name = name(&path)?;
    let parts: TemplateParts = body(&req, payload, &state).await?;
    let content = parts.validate()?;
    let record = state
        .store
        .update_template(name, &content, &caller.sub)
        .await?
        .ok_or(ApiError::NotFound)?;
    json(StatusCode::OK, &record)
}

/// Deletes a template; its versions stay stored for the messages rendered from them.
pub async fn delete(
    _caller: Admin,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if state.store.delete_template(name(&path)?).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound)
    }
}

/// Renders a template with the variables given, as a send would; stores nothing.
pub async fn render(
    _caller: Sender,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let name = name(&path)?;
    let request: RenderRequest = body(&req, payload, &state).await?;
    let record = state
        .store
        .template(name, request.version)
        .await?
        .ok_or(ApiError::NotFound)?;
    let variables = request
        .variables
        .unwrap_or_else(|| serde_json::Value::Object(serde_json::Map::new()));
    let rendered = record
        .content
        .render(&variables)
        .map_err(|error| ApiError::Validation(error.into()))?;
    json(
        StatusCode::OK,
        &RenderedView {
            name: record.name,
            version: record.version,
            subject: rendered.subject,
            text: rendered.text,
            html: rendered.html,
        },
    )
}
