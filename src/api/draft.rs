//! The JSON shape of a message (`POST /v1/send`), and its conversion into a domain message.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};
use time::OffsetDateTime;

use super::ApiError;
use super::body::unique_keys;
use crate::domain::{
    Body, DomainError, Envelope, Limits, MessageContent, NewMessage, Stream, TemplateUse, fields,
};
use crate::store::TemplateRecord;

/// One address or a list of them, as callers naturally write either.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// `"a@example.com"`
    One(String),
    /// `["a@example.com", "B <b@example.com>"]`
    Many(Vec<String>),
}

/// An attachment as submitted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachmentDraft {
    /// The name shown to the recipient.
    pub filename: String,
    /// Base64 of the bytes.
    pub content: String,
    /// Media type; `application/octet-stream` when absent.
    #[serde(default)]
    pub content_type: Option<String>,
}

/// A send's template: which one, and the variables it is rendered with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateDraft {
    /// The template's name.
    pub name: String,
    /// A version; the newest when absent.
    #[serde(default)]
    pub version: Option<i32>,
    /// The variables, a JSON object.
    #[serde(default)]
    pub variables: Option<serde_json::Value>,
}

/// The body of `POST /send`, before validation. Unknown fields are refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageDraft {
    /// `Name <addr>` or `addr`.
    pub from: String,
    /// Primary recipients.
    #[serde(default)]
    pub to: Option<OneOrMany>,
    /// Carbon-copy recipients.
    #[serde(default)]
    pub cc: Option<OneOrMany>,
    /// Blind recipients: in the envelope, never in a header.
    #[serde(default)]
    pub bcc: Option<OneOrMany>,
    /// Where replies go.
    #[serde(default)]
    pub reply_to: Option<OneOrMany>,
    /// Subject line.
    #[serde(default)]
    pub subject: Option<String>,
    /// Plain-text body.
    #[serde(default)]
    pub text: Option<String>,
    /// HTML body.
    #[serde(default)]
    pub html: Option<String>,
    /// Custom headers from the allow-list.
    #[serde(default, deserialize_with = "headers")]
    pub headers: Option<BTreeMap<String, String>>,
    /// Files to attach.
    #[serde(default)]
    pub attachments: Option<Vec<AttachmentDraft>>,
    /// Labels for filtering.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// Caller data kept with the message.
    #[serde(default, deserialize_with = "metadata")]
    pub metadata: Option<BTreeMap<String, String>>,
    /// RFC 3339 time before which the message is not sent.
    #[serde(default)]
    pub send_at: Option<String>,
    /// A stored template to render instead of `subject`, `text` and `html`.
    #[serde(default)]
    pub template: Option<TemplateDraft>,
    /// The message's own idempotency key (an item of a batch; a single send may give it here instead
    /// of in the `Idempotency-Key` header).
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// `transactional` (the default) or `broadcast`.
    #[serde(default)]
    pub stream: Option<String>,
    /// The template the subject and bodies were rendered from.
    #[serde(skip)]
    pub rendered_from: Option<TemplateUse>,
}

fn headers<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    unique_keys(deserializer, "headers")
}

fn metadata<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    unique_keys(deserializer, "metadata")
}

impl MessageDraft {
    /// Renders `template` (the one the draft names) with the draft's variables into its subject and
    /// bodies, which the draft must not give itself.
    pub fn render(&mut self, template: &TemplateRecord) -> Result<(), ApiError> {
        let Some(wanted) = self.template.take() else {
            return Ok(());
        };
        if self.subject.is_some() || self.text.is_some() || self.html.is_some() {
            return Err(ApiError::InvalidRequest {
                message: "give either a template or subject, text and html, not both".into(),
                field: Some("template".into()),
            });
        }
        let variables = wanted
            .variables
            .unwrap_or_else(|| serde_json::Value::Object(serde_json::Map::new()));
        let rendered = template
            .content
            .render(&variables)
            .map_err(|error| ApiError::Validation(error.into()))?;
        self.subject = Some(rendered.subject);
        self.text = rendered.text;
        self.html = rendered.html;
        self.rendered_from = Some(TemplateUse {
            name: template.name.clone(),
            version: template.version,
        });
        Ok(())
    }

    /// Validates the draft against the limits; `now` anchors the scheduling window.
    pub fn into_message(
        self,
        limits: &Limits,
        now: OffsetDateTime,
    ) -> Result<NewMessage, DomainError> {
        if self.template.is_some() {
            return Err(DomainError::invalid(
                "template",
                "was not rendered (no template store is reachable here)",
            ));
        }
        let from =
            crate::domain::Mailbox::parse(&self.from).map_err(|source| DomainError::Address {
                field: "from".into(),
                source,
            })?;
        let recipients = |field: &str, input: Option<&OneOrMany>| match input {
            None => Ok(Vec::new()),
            Some(OneOrMany::One(one)) => fields::mailboxes(
                field,
                std::slice::from_ref(one),
                false,
                limits.max_recipients,
            ),
            Some(OneOrMany::Many(many)) => {
                fields::mailboxes(field, many, true, limits.max_recipients)
            }
        };
        let envelope = Envelope::new(
            from,
            [
                recipients("to", self.to.as_ref())?,
                recipients("cc", self.cc.as_ref())?,
                recipients("bcc", self.bcc.as_ref())?,
                recipients("reply_to", self.reply_to.as_ref())?,
            ],
            self.subject.unwrap_or_default(),
        )?;
        let attachments = self
            .attachments
            .into_iter()
            .flatten()
            .map(|a| (a.filename, a.content, a.content_type))
            .collect();
        let body = Body::new(
            self.text,
            self.html,
            fields::custom_headers(&self.headers.unwrap_or_default(), limits.max_headers)?,
            fields::attachments(attachments, limits)?,
        )?;
        let tags = fields::tags(self.tags.unwrap_or_default())?;
        let metadata = fields::metadata(self.metadata.unwrap_or_default())?;
        let send_at = self
            .send_at
            .map(|text| fields::send_at(&text, now, limits.max_schedule_ahead))
            .transpose()?;
        let mut message = NewMessage::new(
            MessageContent {
                envelope,
                body,
                raw: None,
            },
            tags,
            metadata,
            send_at,
        );
        message.template = self.rendered_from;
        if let Some(stream) = &self.stream {
            message.stream = Stream::parse(stream).ok_or_else(|| {
                DomainError::invalid("stream", "must be transactional or broadcast")
            })?;
        }
        Ok(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: serde_json::Value) -> Result<NewMessage, DomainError> {
        let draft: MessageDraft = serde_json::from_value(json).unwrap();
        draft.into_message(&Limits::default(), OffsetDateTime::now_utc())
    }

    #[test]
    fn accepts_a_full_message() {
        let message = parse(serde_json::json!({
            "from": "Shop <shop@example.com>",
            "to": ["a@example.org", "B <b@example.org>"],
            "bcc": "audit@example.com",
            "subject": "Your order",
            "text": "Thanks",
            "headers": {"X-Order": "42"},
            "tags": ["order"],
            "metadata": {"order": "42"},
            "send_at": "2000-01-01T00:00:00Z"
        }))
        .unwrap();
        assert_eq!(message.content.envelope.recipients().len(), 3);
        assert!(message.message_id.ends_with("@example.com>"));
    }

    #[test]
    fn a_map_key_given_twice_is_refused_naming_it() {
        let body = r#"{"from": "a@example.com", "to": "b@example.com", "text": "x",
                       "headers": {"X-A": "1", "X-A": "2"}}"#;
        let error = serde_json::from_str::<MessageDraft>(body)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("duplicate key `X-A` in `headers`"),
            "{error}"
        );
        let repeated = r#"{"from": "a@example.com", "from": "c@example.com", "text": "x"}"#;
        let error = serde_json::from_str::<MessageDraft>(repeated)
            .unwrap_err()
            .to_string();
        assert!(error.contains("duplicate field `from`"), "{error}");
        let null =
            r#"{"from": "a@example.com", "to": "b@example.com", "text": "x", "metadata": null}"#;
        assert!(
            serde_json::from_str::<MessageDraft>(null)
                .unwrap()
                .metadata
                .is_none()
        );
    }

    #[test]
    fn refuses_what_it_must() {
        let base =
            || serde_json::json!({"from": "a@example.com", "to": "b@example.com", "text": "x"});
        let mut no_body = base();
        no_body["text"] = serde_json::Value::Null;
        assert!(matches!(parse(no_body), Err(DomainError::MissingBody)));
        let mut injected = base();
        injected["subject"] = "hi\r\nBcc: x@example.com".into();
        assert!(matches!(
            parse(injected),
            Err(DomainError::InvalidField { .. })
        ));
        let mut far = base();
        far["send_at"] = "2999-01-01T00:00:00Z".into();
        assert!(matches!(parse(far), Err(DomainError::SendAtTooFar { .. })));
        let mut not_time = base();
        not_time["send_at"] = "tomorrow".into();
        assert!(matches!(parse(not_time), Err(DomainError::InvalidSendAt)));
        let mut many = base();
        many["to"] = serde_json::json!(vec!["x@example.com"; 51]);
        assert!(matches!(
            parse(many),
            Err(DomainError::TooManyRecipients { max: 50, .. })
        ));
    }
}
