//! Public contact forms: a post from a visitor's browser becomes one message to the form's fixed
//! recipients, from the form's fixed sender. Nothing in a post chooses a recipient or the author; the
//! visitor's address becomes `Reply-To`, and every field is listed in the body. The HTTP side (origins,
//! CORS, the visitor's address, content types) belongs to the API; the per-address budget to the store.

mod captcha;

use std::collections::BTreeMap;
use std::sync::LazyLock;

use minijinja::{Environment, UndefinedBehavior};

pub use captcha::{Captcha, CaptchaError, CaptchaProvider};

use crate::domain::{
    Attachment, DomainError, Envelope, Mailbox, MessageContent, NewMessage, Source,
};
use crate::rate_limit::RateLimit;

/// Most fields one post may have.
pub const MAX_FIELDS: usize = 50;
/// Longest field name, in characters.
pub const MAX_NAME: usize = 100;
/// Longest field value, in characters.
pub const MAX_VALUE: usize = 20_000;
/// Longest subject a template may render (longer ones are cut).
const MAX_SUBJECT: usize = 200;
/// Instructions a subject template may execute.
const FUEL: u64 = 50_000;

/// The field whose value becomes `Reply-To`.
pub const EMAIL_FIELD: &str = "email";

/// One configured form.
#[derive(Debug, Clone)]
pub struct Form {
    /// Its id, the last segment of `POST /v1/forms/{id}`.
    pub id: String,
    /// Who receives every post.
    pub to: Vec<Mailbox>,
    /// The author of every message.
    pub from: Mailbox,
    /// Origins (`scheme://host[:port]`) whose pages may post.
    pub allowed_origins: Vec<String>,
    /// Where a browser goes after a plain HTML post.
    pub redirect: Option<String>,
    /// The subject's template over the fields (`None`: "Form: ID").
    pub subject: Option<String>,
    /// Posts per visitor address, for every replica together.
    pub rate_limit_per_ip: Option<RateLimit>,
    /// A field real visitors leave empty; a post that fills it is answered as a success and dropped.
    pub honeypot: Option<String>,
    /// A captcha every post must pass.
    pub captcha: Option<Captcha>,
}

/// A post as the API read it: its fields in order, and its files.
#[derive(Debug, Default)]
pub struct Post {
    /// Name and value of each field, in the order posted.
    pub fields: Vec<(String, String)>,
    /// Uploaded files, as attachments.
    pub files: Vec<Attachment>,
}

/// Why a post was refused. The text is safe to show to the visitor.
#[derive(Debug, thiserror::Error)]
pub enum FormError {
    /// More fields than [`MAX_FIELDS`].
    #[error("the form has more than {MAX_FIELDS} fields")]
    TooManyFields,
    /// A field name that is empty, too long or holds control characters.
    #[error(
        "a field name is empty, longer than {MAX_NAME} characters, or holds control characters"
    )]
    BadFieldName,
    /// A field value longer than [`MAX_VALUE`] or holding a NUL.
    #[error("the field `{0}` is longer than {MAX_VALUE} characters or holds a NUL character")]
    BadValue(String),
    /// No field has anything in it.
    #[error("the form is empty")]
    Empty,
    /// The `email` field is not an address.
    #[error("the field `email` is not a valid email address")]
    BadEmail,
    /// The message could not be built (the configured sender or recipients, or the attachments).
    #[error("{0}")]
    Message(#[from] DomainError),
}

impl Form {
    /// The caller its messages belong to: `form:ID`.
    pub fn caller(&self) -> String {
        format!("form:{}", self.id)
    }

    /// Whether `origin` (`scheme://host[:port]`, as browsers send it) may post.
    pub fn allows_origin(&self, origin: &str) -> bool {
        let origin = origin.trim_end_matches('/');
        self.allowed_origins
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(origin))
    }

    /// Whether the post filled the honeypot (a bot): it is answered as a success and not sent.
    pub fn is_trapped(&self, post: &Post) -> bool {
        self.honeypot.as_ref().is_some_and(|trap| {
            post.fields
                .iter()
                .any(|(name, value)| name == trap && !value.trim().is_empty())
        })
    }

    /// The message a post becomes: to the form's recipients, from its sender, `Reply-To` the
    /// visitor's `email`, every field listed (the honeypot and the captcha's own field left out).
    pub fn message(&self, post: Post) -> Result<NewMessage, FormError> {
        check_fields(&post.fields)?;
        let shown: Vec<&(String, String)> = post
            .fields
            .iter()
            .filter(|(name, _)| !self.is_hidden(name))
            .collect();
        if shown.iter().all(|(_, value)| value.trim().is_empty()) && post.files.is_empty() {
            return Err(FormError::Empty);
        }
        let reply_to = match field(&post.fields, EMAIL_FIELD).map(str::trim) {
            Some(email) if !email.is_empty() => {
                let mailbox = Mailbox::parse(email).map_err(|_| FormError::BadEmail)?;
                // An address only: a name would be the visitor's words in a header.
                vec![Mailbox {
                    name: None,
                    address: mailbox.address,
                }]
            }
            _ => Vec::new(),
        };
        let subject = self.subject(&shown);
        let envelope = Envelope::new(
            self.from.clone(),
            [self.to.clone(), Vec::new(), Vec::new(), reply_to],
            subject,
        )?;
        let (text, html) = body(&self.id, &shown, &post.files);
        let body = crate::domain::Body::new(Some(text), Some(html), Vec::new(), post.files)?;
        let mut message = NewMessage::new(
            MessageContent {
                envelope,
                body,
                raw: None,
            },
            vec![self.caller()],
            BTreeMap::new(),
            None,
        );
        message.source = Source::Form;
        Ok(message)
    }

    fn is_hidden(&self, name: &str) -> bool {
        self.honeypot.as_deref() == Some(name)
            || self
                .captcha
                .as_ref()
                .is_some_and(|captcha| captcha.provider.field() == name)
    }

    /// The rendered subject: one line, fields the post lacks rendered empty.
    fn subject(&self, fields: &[&(String, String)]) -> String {
        let Some(template) = &self.subject else {
            return format!("Form: {}", self.id);
        };
        let values: BTreeMap<String, String> = fields
            .iter()
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        let rendered = subject_environment()
            .render_str(template, values)
            .unwrap_or_else(|_| format!("Form: {}", self.id));
        one_line(&rendered, MAX_SUBJECT)
    }
}

/// Checks a subject template once, at start.
pub fn check_subject(template: &str) -> Result<(), String> {
    subject_environment()
        .template_from_str(template)
        .map(drop)
        .map_err(|error| format!("subject: {error}"))
}

/// Subjects render lenient (a missing field is empty), unescaped (the subject is not HTML), on fuel.
/// One engine for every form and post.
fn subject_environment() -> &'static Environment<'static> {
    static ENVIRONMENT: LazyLock<Environment<'static>> = LazyLock::new(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Lenient);
        env.set_fuel(Some(FUEL));
        env.set_recursion_limit(16);
        env
    });
    &ENVIRONMENT
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(field, _)| field == name)
        .map(|(_, value)| value.as_str())
}

fn check_fields(fields: &[(String, String)]) -> Result<(), FormError> {
    if fields.len() > MAX_FIELDS {
        return Err(FormError::TooManyFields);
    }
    for (name, value) in fields {
        if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control)
        {
            return Err(FormError::BadFieldName);
        }
        if value.chars().count() > MAX_VALUE || value.contains('\0') {
            return Err(FormError::BadValue(name.clone()));
        }
    }
    Ok(())
}

/// Control characters (CR and LF among them) become spaces, runs of spaces one, and the line is cut
/// at `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let mut line = String::with_capacity(text.len().min(max * 4));
    for word in text
        .split(|c: char| c.is_control() || c.is_whitespace())
        .filter(|word| !word.is_empty())
    {
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    line.chars().take(max).collect()
}

/// The text and HTML bodies: every field with its value, the files by name.
fn body(id: &str, fields: &[&(String, String)], files: &[Attachment]) -> (String, String) {
    let mut text = format!("A visitor sent the form `{id}`.\r\n\r\n");
    let mut html = format!(
        "<!doctype html><html><body><p>A visitor sent the form <code>{}</code>.</p><table>",
        escape(id)
    );
    for (name, value) in fields {
        let value = value.replace("\r\n", "\n").replace('\r', "\n");
        if value.contains('\n') {
            text.push_str(&format!("{name}:\r\n"));
            for line in value.split('\n') {
                text.push_str(&format!("  {line}\r\n"));
            }
        } else {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        html.push_str(&format!(
            "<tr><th align=\"left\" valign=\"top\">{}</th><td style=\"white-space: pre-wrap\">{}</td></tr>",
            escape(name),
            escape(&value)
        ));
    }
    html.push_str("</table>");
    if !files.is_empty() {
        text.push_str("\r\nFiles:\r\n");
        html.push_str("<p>Files:</p><ul>");
        for file in files {
            text.push_str(&format!("  {} ({} bytes)\r\n", file.filename, file.size));
            html.push_str(&format!(
                "<li>{} ({} bytes)</li>",
                escape(&file.filename),
                file.size
            ));
        }
        html.push_str("</ul>");
    }
    html.push_str("</body></html>");
    (text, html)
}

/// HTML text escaping: the five characters that could open markup or end an attribute.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form() -> Form {
        Form {
            id: "contact".into(),
            to: vec![Mailbox::parse("owner@example.com").unwrap()],
            from: Mailbox::parse("Website <forms@example.com>").unwrap(),
            allowed_origins: vec!["https://example.com".into()],
            redirect: None,
            subject: Some("Contact form: {{ name }}".into()),
            rate_limit_per_ip: None,
            honeypot: Some("_gotcha".into()),
            captcha: None,
        }
    }

    fn post(fields: &[(&str, &str)]) -> Post {
        Post {
            fields: fields
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
            files: Vec::new(),
        }
    }

    #[test]
    fn a_post_becomes_a_message_to_the_form_s_recipients_replying_to_the_visitor() {
        let message = form()
            .message(post(&[
                ("name", "Ada"),
                ("email", "ada@example.net"),
                ("message", "<b>hi</b>\r\nthere"),
                ("_gotcha", ""),
            ]))
            .unwrap();
        let envelope = &message.content.envelope;
        assert_eq!(envelope.to[0].address.as_str(), "owner@example.com");
        assert_eq!(envelope.from.address.as_str(), "forms@example.com");
        assert_eq!(envelope.reply_to[0].address.as_str(), "ada@example.net");
        assert_eq!(envelope.subject, "Contact form: Ada");
        let text = message.content.body.text.as_deref().unwrap();
        assert!(
            text.contains("name: Ada") && text.contains("  there"),
            "{text}"
        );
        assert!(!text.contains("_gotcha"));
        let html = message.content.body.html.as_deref().unwrap();
        assert!(html.contains("&lt;b&gt;hi&lt;/b&gt;") && !html.contains("<b>hi"));
        assert_eq!(message.source, Source::Form);
    }

    #[test]
    fn header_bound_values_cannot_break_a_line_and_a_missing_field_renders_empty() {
        let injected = form()
            .message(post(&[
                ("name", "Ada\r\nBcc: victim@example.org"),
                ("m", "x"),
            ]))
            .unwrap();
        assert_eq!(
            injected.content.envelope.subject,
            "Contact form: Ada Bcc: victim@example.org"
        );
        assert!(injected.content.envelope.bcc.is_empty());
        let missing = form().message(post(&[("message", "hello")])).unwrap();
        assert_eq!(missing.content.envelope.subject, "Contact form:");
        assert!(matches!(
            form().message(post(&[("email", "a@b\r\nBcc: x@y"), ("m", "x")])),
            Err(FormError::BadEmail)
        ));
    }

    #[test]
    fn bounds_and_traps() {
        let many: Vec<(String, String)> = (0..=MAX_FIELDS)
            .map(|n| (format!("f{n}"), "x".into()))
            .collect();
        let too_many = Post {
            fields: many,
            files: Vec::new(),
        };
        assert!(matches!(
            form().message(too_many),
            Err(FormError::TooManyFields)
        ));
        let long = "x".repeat(MAX_VALUE + 1);
        assert!(matches!(
            form().message(post(&[("message", &long)])),
            Err(FormError::BadValue(_))
        ));
        assert!(matches!(
            form().message(post(&[("message", " ")])),
            Err(FormError::Empty)
        ));
        assert!(form().is_trapped(&post(&[("_gotcha", "http://spam")])));
        assert!(!form().is_trapped(&post(&[("_gotcha", "")])));
        assert!(form().allows_origin("https://example.com"));
        assert!(form().allows_origin("https://EXAMPLE.com/"));
        assert!(!form().allows_origin("https://example.com.evil.net"));
        assert!(!form().allows_origin("null"));
    }
}
