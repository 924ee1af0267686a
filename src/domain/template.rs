//! Templates: a subject, a text part and an HTML part written in Jinja (minijinja), rendered once at
//! accept so what is queued is what is sent.
//!
//! The HTML part escapes what variables bring in, the text part and the subject do not; a variable a
//! template uses but the send does not give is refused by name (nothing renders as empty by accident);
//! a variable that renders into the subject cannot carry a line break; and rendering runs on a fuel
//! budget, so no template can keep the server busy.

use std::collections::BTreeSet;

use minijinja::value::Serde;
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};
use serde::{Deserialize, Serialize};

/// Instructions one rendering may execute: far more than any real email needs (a loop over a thousand
/// order lines uses a few tens of thousands), far less than a second of work.
pub const FUEL: u64 = 500_000;

/// Most nested template structure (loops, blocks) a template may have.
const RECURSION_LIMIT: usize = 64;

/// Longest template name.
const MAX_NAME: usize = 64;

/// Longest source of one part, in bytes.
pub const MAX_SOURCE: usize = 512 * 1024;

/// The parts of a template as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateContent {
    /// The subject line's template.
    pub subject: String,
    /// The plain-text part's template.
    pub text: Option<String>,
    /// The HTML part's template.
    pub html: Option<String>,
}

/// Which template, in which version, a message was rendered from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateUse {
    /// The template's name.
    pub name: String,
    /// Its version (1 for the first).
    pub version: i32,
}

/// A template rendered with a send's variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The subject line.
    pub subject: String,
    /// The plain-text part.
    pub text: Option<String>,
    /// The HTML part.
    pub html: Option<String>,
}

/// Why a template could not be stored or rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The name is not one a template may have.
    #[error(
        "a template name is 1-{MAX_NAME} characters of a-z, A-Z, 0-9, `-`, `_` and `.`, starting with a letter or digit"
    )]
    InvalidName,
    /// Neither a text nor an HTML part.
    #[error("a template needs a text part, an HTML part or both")]
    MissingBody,
    /// A part is too large.
    #[error("the {part} template is larger than {MAX_SOURCE} bytes")]
    TooLarge {
        /// `subject`, `text` or `html`.
        part: &'static str,
    },
    /// A part does not parse.
    #[error("the {part} template does not parse: {message}")]
    Syntax {
        /// `subject`, `text` or `html`.
        part: &'static str,
        /// The parser's words.
        message: String,
    },
    /// Variables the template uses were not given.
    #[error("the template uses {} that the send does not give", list(.names))]
    MissingVariables {
        /// Their names.
        names: Vec<String>,
    },
    /// A variable that renders into the subject holds a line break.
    #[error("the variable `{name}` renders into the subject and holds a line break (CR or LF)")]
    HeaderBreak {
        /// The variable.
        name: String,
    },
    /// The subject renders with a line break (the template itself makes one).
    #[error("the subject renders with a line break (CR or LF)")]
    SubjectBreak,
    /// Rendering used up its fuel.
    #[error(
        "rendering the {part} template takes too long (it ran out of its budget of {FUEL} steps)"
    )]
    TooExpensive {
        /// `subject`, `text` or `html`.
        part: &'static str,
    },
    /// Rendering failed for another reason (a filter given the wrong type, a division by zero...).
    #[error("rendering the {part} template failed: {message}")]
    Render {
        /// `subject`, `text` or `html`.
        part: &'static str,
        /// The engine's words.
        message: String,
    },
    /// The variables are not a JSON object.
    #[error("template variables must be a JSON object")]
    VariablesNotAnObject,
}

impl TemplateError {
    /// The request field a caller should look at.
    pub fn field(&self) -> &'static str {
        match self {
            TemplateError::InvalidName => "name",
            TemplateError::MissingBody => "text",
            TemplateError::TooLarge { part }
            | TemplateError::Syntax { part, .. }
            | TemplateError::TooExpensive { part }
            | TemplateError::Render { part, .. } => part,
            TemplateError::MissingVariables { .. }
            | TemplateError::HeaderBreak { .. }
            | TemplateError::VariablesNotAnObject => "variables",
            TemplateError::SubjectBreak => "subject",
        }
    }
}

fn list(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|name| format!("`{name}`")).collect();
    match quoted.len() {
        1 => format!("the variable {}", quoted[0]),
        _ => format!("the variables {}", quoted.join(", ")),
    }
}

/// Checks a template's name.
pub fn validate_name(name: &str) -> Result<(), TemplateError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if first_ok && rest_ok && name.len() <= MAX_NAME {
        Ok(())
    } else {
        Err(TemplateError::InvalidName)
    }
}

/// The engine every template runs in: strict about undefined values, HTML escaping only in the HTML
/// part, a fuel budget, a recursion limit, and no way to load other templates.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|name| {
        if name == "html" {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(RECURSION_LIMIT);
    // Text keeps its last newline as written.
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
        .keep_trailing_newline(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    env
}

impl TemplateContent {
    /// A template whose parts all parse, with a text or an HTML part.
    pub fn new(
        subject: String,
        text: Option<String>,
        html: Option<String>,
    ) -> Result<Self, TemplateError> {
        let text = text.filter(|text| !text.is_empty());
        let html = html.filter(|html| !html.is_empty());
        if text.is_none() && html.is_none() {
            return Err(TemplateError::MissingBody);
        }
        let content = Self {
            subject,
            text,
            html,
        };
        let env = environment();
        for (part, source) in content.parts() {
            if source.len() > MAX_SOURCE {
                return Err(TemplateError::TooLarge { part });
            }
            if source.contains('\0') {
                return Err(TemplateError::Syntax {
                    part,
                    message: "contains a NUL character".into(),
                });
            }
            env.template_from_named_str(part, source)
                .map_err(|error| TemplateError::Syntax {
                    part,
                    message: describe(&error),
                })?;
        }
        Ok(content)
    }

    fn parts(&self) -> Vec<(&'static str, &str)> {
        let mut parts = vec![("subject", self.subject.as_str())];
        if let Some(text) = &self.text {
            parts.push(("text", text));
        }
        if let Some(html) = &self.html {
            parts.push(("html", html));
        }
        parts
    }

    /// Renders every part with `variables` (a JSON object).
    pub fn render(&self, variables: &serde_json::Value) -> Result<Rendered, TemplateError> {
        let serde_json::Value::Object(given) = variables else {
            return Err(TemplateError::VariablesNotAnObject);
        };
        let env = environment();
        let globals: BTreeSet<&str> = env.globals().map(|(name, _)| name).collect();
        let mut compiled = Vec::new();
        let mut missing = BTreeSet::new();
        for (part, source) in self.parts() {
            let template = env.template_from_named_str(part, source).map_err(|error| {
                TemplateError::Syntax {
                    part,
                    message: describe(&error),
                }
            })?;
            for name in template.undeclared_variables(false) {
                if !given.contains_key(&name) && !globals.contains(name.as_str()) {
                    missing.insert(name);
                }
            }
            compiled.push((part, template));
        }
        if !missing.is_empty() {
            return Err(TemplateError::MissingVariables {
                names: missing.into_iter().collect(),
            });
        }
        // A variable that reaches the subject must not be able to start a new header.
        if let Some((_, subject)) = compiled.first() {
            for name in subject.undeclared_variables(false) {
                if given.get(&name).is_some_and(holds_line_break) {
                    return Err(TemplateError::HeaderBreak { name });
                }
            }
        }
        let context = minijinja::Value::from(Serde(variables));
        let mut rendered = Rendered {
            subject: String::new(),
            text: None,
            html: None,
        };
        for (part, template) in compiled {
            let output = template
                .render(&context)
                .map_err(|error| match error.kind() {
                    ErrorKind::OutOfFuel => TemplateError::TooExpensive { part },
                    _ => TemplateError::Render {
                        part,
                        message: describe(&error),
                    },
                })?;
            match part {
                "subject" => rendered.subject = output,
                "text" => rendered.text = Some(output),
                _ => rendered.html = Some(output),
            }
        }
        if rendered.subject.contains(['\r', '\n']) {
            return Err(TemplateError::SubjectBreak);
        }
        Ok(rendered)
    }
}

/// Whether a variable's value (a string, or one inside a list or object) holds CR or LF.
fn holds_line_break(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(text) => text.contains(['\r', '\n']),
        serde_json::Value::Array(items) => items.iter().any(holds_line_break),
        serde_json::Value::Object(map) => map.values().any(holds_line_break),
        _ => false,
    }
}

/// The engine's error in one line, with where it happened.
fn describe(error: &minijinja::Error) -> String {
    let mut text = error.kind().to_string();
    if let Some(detail) = error.detail() {
        text.push_str(": ");
        text.push_str(detail);
    }
    if let Some(line) = error.line() {
        text.push_str(&format!(" (line {line})"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(subject: &str, text: Option<&str>, html: Option<&str>) -> TemplateContent {
        TemplateContent::new(subject.into(), text.map(Into::into), html.map(Into::into)).unwrap()
    }

    #[test]
    fn html_escapes_and_text_does_not() {
        let t = template(
            "Hi {{ name }}",
            Some("Hello {{ name }}"),
            Some("<p>Hello {{ name }}</p>"),
        );
        let out = t.render(&json!({"name": "<b>Al & Co</b>"})).unwrap();
        assert_eq!(out.subject, "Hi <b>Al & Co</b>");
        assert_eq!(out.text.as_deref(), Some("Hello <b>Al & Co</b>"));
        assert_eq!(
            out.html.as_deref(),
            Some("<p>Hello &lt;b&gt;Al &amp; Co&lt;&#x2f;b&gt;</p>")
        );
    }

    #[test]
    fn a_missing_variable_is_named() {
        let t = template(
            "Order {{ order.id }}",
            Some("{% for line in lines %}{{ line }}{% endfor %} {{ total }}"),
            None,
        );
        let error = t.render(&json!({"lines": []})).unwrap_err();
        assert_eq!(
            error,
            TemplateError::MissingVariables {
                names: vec!["order".into(), "total".into()]
            }
        );
        assert!(error.to_string().contains("`order`, `total`"), "{error}");
        // A nested attribute missing is still an error, not an empty string.
        let error = t
            .render(&json!({"order": {}, "lines": [], "total": 1}))
            .unwrap_err();
        assert!(
            matches!(
                error,
                TemplateError::Render {
                    part: "subject",
                    ..
                }
            ),
            "{error:?}"
        );
    }

    #[test]
    fn a_line_break_cannot_reach_the_subject() {
        let t = template("Hi {{ name }}", Some("{{ body }}"), None);
        assert_eq!(
            t.render(&json!({"name": "x\r\nBcc: a@example.com", "body": "ok"}))
                .unwrap_err(),
            TemplateError::HeaderBreak {
                name: "name".into()
            }
        );
        // In the body a line break is fine.
        assert!(t.render(&json!({"name": "x", "body": "a\nb"})).is_ok());
        let written = template("{{ 'a\\nb' }}", Some("x"), None);
        assert_eq!(
            written.render(&json!({})).unwrap_err(),
            TemplateError::SubjectBreak
        );
    }

    #[test]
    fn rendering_runs_out_of_fuel() {
        let t = template(
            "x",
            Some(
                "{% for a in range(1000) %}{% for b in range(1000) %}{{ a }}{% endfor %}{% endfor %}",
            ),
            None,
        );
        assert_eq!(
            t.render(&json!({})).unwrap_err(),
            TemplateError::TooExpensive { part: "text" }
        );
    }

    #[test]
    fn syntax_and_names_are_checked_when_stored() {
        assert!(matches!(
            TemplateContent::new("x".into(), Some("{% for %}".into()), None),
            Err(TemplateError::Syntax { part: "text", .. })
        ));
        assert_eq!(
            TemplateContent::new("x".into(), None, Some(String::new())),
            Err(TemplateError::MissingBody)
        );
        assert!(validate_name("welcome-email_v2.en").is_ok());
        for bad in ["", "-x", "a b", "é", &"a".repeat(65)] {
            assert_eq!(validate_name(bad), Err(TemplateError::InvalidName), "{bad}");
        }
    }
}
