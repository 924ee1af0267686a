//! What a message would become without sending it: the bytes after DATA, the SMTP envelope, and the
//! provider that would take it (a dry run).

use std::time::SystemTime;

use super::compose::{ComposeError, Composition, compose};
use super::transport::Transport;
use crate::domain::{NewMessage, RouteFacts};

/// A message as it would go on the wire.
#[derive(Debug, Clone)]
pub struct Preview {
    /// The message after DATA.
    pub data: Vec<u8>,
    /// `MAIL FROM`.
    pub mail_from: String,
    /// `RCPT TO`, in order.
    pub rcpt_to: Vec<String>,
    /// The provider that would take it; `None` when none is configured (it would wait in the queue).
    pub provider: Option<String>,
}

/// Composes `message` exactly as a worker would (its `Date` is now) and routes it as `caller`'s.
pub fn preview(
    message: &NewMessage,
    caller: &str,
    transport: Option<&Transport>,
) -> Result<Preview, ComposeError> {
    let content = &message.content;
    let data = match &content.raw {
        Some(raw) => raw.clone(),
        None => compose(&Composition {
            content,
            message_id: &message.message_id,
            date: SystemTime::now(),
        })?,
    };
    Ok(Preview {
        data,
        mail_from: content.envelope.return_path().as_str().to_owned(),
        rcpt_to: content
            .envelope
            .recipients()
            .into_iter()
            .map(str::to_owned)
            .collect(),
        provider: transport
            .and_then(|transport| {
                transport.provider_for(&RouteFacts::of(
                    &content.envelope,
                    message.stream,
                    caller,
                    &message.tags,
                ))
            })
            .map(str::to_owned),
    })
}
