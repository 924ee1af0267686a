//! One SMTP submission session (RFC 5321, RFC 6409): greeting, EHLO, STARTTLS, AUTH, then messages,
//! each handed to the accept path and answered `250` only once it is committed.
//!
//! Where a session stands is one [`Phase`]; each command is checked against it, and every refusal is a
//! reply with an enhanced status code (RFC 3463), counted by its reason.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::data::{self, DataOutcome};
use super::stream::{Connection, Transport};
use super::{Context, SessionEnd};
use crate::accept::{AcceptError, Submission};
use crate::auth::{Caller, Scope};
use crate::domain::{
    DomainError, EmailAddress, IdempotencyKey, RawSubmission, RequestFingerprint, Source,
};
use crate::store::StoreError;

/// The longest command line read (an `AUTH PLAIN` line carries a token of several hundred bytes).
const MAX_COMMAND: usize = 8 * 1024;

/// Bad commands in a row that end the session.
const MAX_ERRORS: u32 = 10;

/// Where a session stands.
enum Phase {
    /// Greeted; no EHLO yet (again after STARTTLS).
    Connected,
    /// EHLO done; no transaction.
    Ready,
    /// MAIL accepted; recipients are being given.
    Transaction(Transaction),
}

/// The envelope of the message under way.
struct Transaction {
    /// Empty for a null return path (`MAIL FROM:<>`, as reports come).
    sender: Option<EmailAddress>,
    recipients: Vec<EmailAddress>,
    /// No caller: a report to VERP addresses, the only mail taken without AUTH.
    report: bool,
}

/// One session's state beyond its phase.
struct Session<'a> {
    context: &'a Context,
    peer: SocketAddr,
    tls: bool,
    phase: Phase,
    caller: Option<Caller>,
    errors: u32,
}

/// What a command handler says should happen next.
enum Next {
    Continue,
    StartTls,
    Quit,
}

/// Runs a session on `transport` until the client quits, the session fails or `stop` comes.
pub(super) async fn run(
    context: Arc<Context>,
    transport: Transport,
    peer: SocketAddr,
    tls: bool,
    stop: CancellationToken,
) -> SessionEnd {
    let mut session = Session {
        context: &context,
        peer,
        tls,
        phase: Phase::Connected,
        caller: None,
        errors: 0,
    };
    let mut connection = Connection::new(transport);
    connection.reply(&format!(
        "220 {} ESMTP posthorn ready",
        context.settings.hostname
    ));
    let started = Instant::now();
    loop {
        let deadline = context
            .settings
            .session_timeout
            .checked_sub(started.elapsed())
            .unwrap_or_default()
            .min(context.settings.command_timeout);
        let line = tokio::select! {
            biased;
            () = stop.cancelled() => {
                connection.reply("421 4.3.2 Service shutting down, try again later");
                connection.close().await;
                return SessionEnd::Shutdown;
            }
            read = tokio::time::timeout(deadline, connection.read_line(MAX_COMMAND)) => read,
        };
        let line = match line {
            Err(_) => {
                connection.reply("421 4.4.2 Timeout waiting for a command, closing");
                connection.close().await;
                return SessionEnd::Timeout;
            }
            Ok(Err(_)) | Ok(Ok(None)) => return SessionEnd::Closed,
            Ok(Ok(Some(line))) => line,
        };
        let next = if line.overlong {
            session.refuse(
                &mut connection,
                "line_too_long",
                "500 5.5.6 Command line too long",
            );
            Next::Continue
        } else if !line.is_crlf() {
            session.refuse(
                &mut connection,
                "bare_line_ending",
                "500 5.5.2 Commands must end with CRLF",
            );
            Next::Continue
        } else {
            let text = String::from_utf8_lossy(line.content()).into_owned();
            session.command(&mut connection, &text).await
        };
        if session.errors >= MAX_ERRORS {
            connection.reply("421 4.7.0 Too many errors, closing");
            connection.close().await;
            return SessionEnd::TooManyErrors;
        }
        match next {
            Next::Continue => {}
            Next::Quit => {
                connection.close().await;
                return SessionEnd::Quit;
            }
            Next::StartTls => {
                if connection.flush().await.is_err() {
                    return SessionEnd::Closed;
                }
                // Bytes the client sent after STARTTLS and before the handshake are dropped with
                // the read buffer: they must not be taken as commands of the protected session.
                let Transport::Plain(stream) = connection.into_transport() else {
                    return SessionEnd::Closed;
                };
                let Some(certificate) = &context.certificate else {
                    return SessionEnd::Closed;
                };
                let handshake = tokio::time::timeout(
                    context.settings.command_timeout,
                    certificate.acceptor().accept(stream),
                )
                .await;
                match handshake {
                    Ok(Ok(stream)) => {
                        connection = Connection::new(Transport::Tls(Box::new(stream)));
                        session.tls = true;
                        session.phase = Phase::Connected;
                        session.caller = None;
                    }
                    _ => return SessionEnd::TlsFailed,
                }
            }
        }
    }
}

impl Session<'_> {
    /// Queues a refusal, counts it, and counts it as an error of the session.
    fn refuse(&mut self, connection: &mut Connection, reason: &'static str, reply: &str) {
        self.context
            .services
            .metrics
            .submission_refusals
            .with_label_values(&[reason])
            .inc();
        self.errors += 1;
        connection.reply(reply);
    }

    fn ok(&mut self, connection: &mut Connection, reply: &str) {
        self.errors = 0;
        connection.reply(reply);
    }

    /// Whether AUTH may be used here: over TLS, or from this host.
    fn may_authenticate(&self) -> bool {
        self.tls || self.peer.ip().is_loopback()
    }

    async fn command(&mut self, connection: &mut Connection, line: &str) -> Next {
        let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
        let verb = verb.to_ascii_uppercase();
        let rest = rest.trim();
        match verb.as_str() {
            "EHLO" | "HELO" => self.hello(connection, &verb, rest),
            "STARTTLS" => return self.starttls(connection, rest),
            "AUTH" => self.auth(connection, rest).await,
            "MAIL" => self.mail(connection, rest),
            "RCPT" => self.rcpt(connection, rest),
            "DATA" => return self.data(connection, rest).await,
            "RSET" => {
                if !matches!(self.phase, Phase::Connected) {
                    self.phase = Phase::Ready;
                }
                self.ok(connection, "250 2.0.0 Reset");
            }
            "NOOP" => self.ok(connection, "250 2.0.0 OK"),
            "QUIT" => {
                connection.reply("221 2.0.0 Bye");
                return Next::Quit;
            }
            "VRFY" => self.ok(
                connection,
                "252 2.5.0 Cannot verify, but will accept the message",
            ),
            "HELP" => self.ok(
                connection,
                "214 2.0.0 EHLO STARTTLS AUTH MAIL RCPT DATA RSET NOOP QUIT",
            ),
            "BDAT" | "ETRN" | "EXPN" | "TURN" => self.refuse(
                connection,
                "bad_command",
                "502 5.5.1 Command not implemented",
            ),
            _ => self.refuse(
                connection,
                "bad_command",
                "500 5.5.2 Command not recognized",
            ),
        }
        Next::Continue
    }

    fn hello(&mut self, connection: &mut Connection, verb: &str, rest: &str) {
        if rest.is_empty() || rest.contains(char::is_whitespace) {
            self.refuse(
                connection,
                "bad_syntax",
                &format!("501 5.5.4 {verb} needs one domain or address literal"),
            );
            return;
        }
        self.phase = Phase::Ready;
        let host = &self.context.settings.hostname;
        if verb == "HELO" {
            self.ok(connection, &format!("250 {host}"));
            return;
        }
        let mut lines = vec![
            host.to_string(),
            "PIPELINING".to_owned(),
            format!("SIZE {}", self.context.settings.max_message_size),
            "8BITMIME".to_owned(),
            "ENHANCEDSTATUSCODES".to_owned(),
            "SMTPUTF8".to_owned(),
        ];
        if !self.tls && self.context.certificate.is_some() {
            lines.push("STARTTLS".to_owned());
        }
        if self.may_authenticate() && self.caller.is_none() {
            lines.push("AUTH PLAIN LOGIN".to_owned());
        }
        let last = lines.len() - 1;
        for (index, line) in lines.iter().enumerate() {
            let separator = if index == last { ' ' } else { '-' };
            connection.reply(&format!("250{separator}{line}"));
        }
        self.errors = 0;
    }

    fn starttls(&mut self, connection: &mut Connection, rest: &str) -> Next {
        if self.tls || self.context.certificate.is_none() {
            self.refuse(
                connection,
                "bad_command",
                "502 5.5.1 STARTTLS is not offered here",
            );
        } else if !rest.is_empty() {
            self.refuse(
                connection,
                "bad_syntax",
                "501 5.5.4 STARTTLS takes no argument",
            );
        } else if matches!(self.phase, Phase::Transaction(_)) {
            self.refuse(
                connection,
                "bad_sequence",
                "503 5.5.1 STARTTLS is not allowed during a transaction",
            );
        } else {
            connection.reply("220 2.0.0 Ready to start TLS");
            return Next::StartTls;
        }
        Next::Continue
    }

    async fn auth(&mut self, connection: &mut Connection, rest: &str) {
        if matches!(self.phase, Phase::Connected) {
            self.refuse(connection, "bad_sequence", "503 5.5.1 Send EHLO first");
            return;
        }
        if matches!(self.phase, Phase::Transaction(_)) || self.caller.is_some() {
            self.refuse(
                connection,
                "bad_sequence",
                "503 5.5.1 Already authenticated, or a transaction is under way",
            );
            return;
        }
        if !self.may_authenticate() {
            self.refuse(
                connection,
                "encryption_required",
                "538 5.7.11 Encryption required: use STARTTLS first",
            );
            return;
        }
        let (mechanism, initial) = rest.split_once(' ').unwrap_or((rest, ""));
        let credentials = match mechanism.to_ascii_uppercase().as_str() {
            "PLAIN" => self.plain(connection, initial.trim()).await,
            "LOGIN" => self.login(connection, initial.trim()).await,
            _ => {
                self.refuse(
                    connection,
                    "bad_syntax",
                    "504 5.5.4 Unrecognized authentication mechanism (PLAIN and LOGIN are offered)",
                );
                return;
            }
        };
        let Some((user, password)) = credentials else {
            return;
        };
        match self.context.services.authenticator.authenticate(&password) {
            Ok(caller) if caller.sub != user => self.refuse(
                connection,
                "auth_failed",
                "535 5.7.8 Authentication credentials invalid: the user name is not the token's sub",
            ),
            Ok(caller) if !caller.has(Scope::Send) => self.refuse(
                connection,
                "auth_failed",
                "535 5.7.8 Authentication credentials invalid: the token lacks the send scope",
            ),
            Ok(caller) => {
                self.caller = Some(caller);
                self.ok(connection, "235 2.7.0 Authentication successful");
            }
            Err(error) => self.refuse(
                connection,
                "auth_failed",
                &format!("535 5.7.8 Authentication credentials invalid: {error}"),
            ),
        }
    }

    /// Reads one base64 line answering a `334` challenge; `None` (the reply queued) when the client
    /// cancels or the line is not base64.
    async fn challenge(&mut self, connection: &mut Connection, prompt: &str) -> Option<Vec<u8>> {
        connection.reply(&format!("334 {prompt}"));
        let line = match tokio::time::timeout(
            self.context.settings.command_timeout,
            connection.read_line(MAX_COMMAND),
        )
        .await
        {
            Ok(Ok(Some(line))) if !line.overlong && line.is_crlf() => line,
            _ => {
                self.refuse(
                    connection,
                    "bad_syntax",
                    "501 5.5.2 Authentication exchange cancelled",
                );
                return None;
            }
        };
        self.decode(connection, &String::from_utf8_lossy(line.content()))
    }

    fn decode(&mut self, connection: &mut Connection, text: &str) -> Option<Vec<u8>> {
        if text == "*" {
            self.refuse(
                connection,
                "auth_cancelled",
                "501 5.0.0 Authentication cancelled",
            );
            return None;
        }
        match BASE64.decode(text.trim()) {
            Ok(bytes) => Some(bytes),
            Err(_) => {
                self.refuse(
                    connection,
                    "bad_syntax",
                    "501 5.5.2 Authentication data is not base64",
                );
                None
            }
        }
    }

    /// `AUTH PLAIN` (RFC 4616): `authzid NUL authcid NUL password`; an authzid other than the authcid
    /// is refused.
    async fn plain(
        &mut self,
        connection: &mut Connection,
        initial: &str,
    ) -> Option<(String, String)> {
        let bytes = if initial.is_empty() {
            self.challenge(connection, "").await?
        } else {
            self.decode(connection, initial)?
        };
        let parts: Vec<&[u8]> = bytes.split(|byte| *byte == 0).collect();
        let [authzid, user, password] = parts.as_slice() else {
            self.refuse(
                connection,
                "bad_syntax",
                "501 5.5.2 AUTH PLAIN needs authzid NUL user NUL password",
            );
            return None;
        };
        let user = String::from_utf8_lossy(user).into_owned();
        if !authzid.is_empty() && *authzid != user.as_bytes() {
            self.refuse(
                connection,
                "auth_failed",
                "535 5.7.8 Authentication credentials invalid: acting for another user is not allowed",
            );
            return None;
        }
        Some((user, String::from_utf8_lossy(password).into_owned()))
    }

    /// `AUTH LOGIN`: the user name and the password, each in answer to a `334`.
    async fn login(
        &mut self,
        connection: &mut Connection,
        initial: &str,
    ) -> Option<(String, String)> {
        let user = if initial.is_empty() {
            self.challenge(connection, "VXNlcm5hbWU6").await?
        } else {
            self.decode(connection, initial)?
        };
        let password = self.challenge(connection, "UGFzc3dvcmQ6").await?;
        Some((
            String::from_utf8_lossy(&user).into_owned(),
            String::from_utf8_lossy(&password).into_owned(),
        ))
    }

    fn mail(&mut self, connection: &mut Connection, rest: &str) {
        match self.phase {
            Phase::Connected => {
                return self.refuse(connection, "bad_sequence", "503 5.5.1 Send EHLO first");
            }
            Phase::Transaction(_) => {
                return self.refuse(
                    connection,
                    "bad_sequence",
                    "503 5.5.1 A transaction is already under way",
                );
            }
            Phase::Ready => {}
        }
        let report = self.caller.is_none();
        if report && !self.context.services.reports.by_mail() {
            return self.refuse(
                connection,
                "auth_required",
                "530 5.7.0 Authentication required",
            );
        }
        let Some((path, parameters)) = path_argument(rest, "FROM:") else {
            return self.refuse(
                connection,
                "bad_syntax",
                "501 5.5.4 Syntax: MAIL FROM:<address> [parameters]",
            );
        };
        for parameter in parameters.split_whitespace() {
            let (name, value) = parameter.split_once('=').unwrap_or((parameter, ""));
            match name.to_ascii_uppercase().as_str() {
                "SIZE" => match value.parse::<usize>() {
                    Ok(size) if size > self.context.settings.max_message_size => {
                        return self.refuse(
                            connection,
                            "too_large",
                            &format!(
                                "552 5.3.4 Message size exceeds the limit of {} octets",
                                self.context.settings.max_message_size
                            ),
                        );
                    }
                    Ok(_) => {}
                    Err(_) => {
                        return self.refuse(
                            connection,
                            "bad_syntax",
                            "501 5.5.4 SIZE needs a number",
                        );
                    }
                },
                "BODY" if ["7BIT", "8BITMIME"].contains(&value.to_ascii_uppercase().as_str()) => {}
                "SMTPUTF8" | "AUTH" => {}
                _ => {
                    return self.refuse(
                        connection,
                        "bad_syntax",
                        &format!("555 5.5.4 Unsupported MAIL parameter {name}"),
                    );
                }
            }
        }
        // Reports come from the null return path; so may any mail that is a report.
        if path.is_empty() && report {
            self.phase = Phase::Transaction(Transaction {
                sender: None,
                recipients: Vec::new(),
                report,
            });
            return self.ok(connection, "250 2.1.0 Sender OK");
        }
        if path.is_empty() {
            return self.refuse(
                connection,
                "bad_syntax",
                "501 5.1.7 A sender address is required",
            );
        }
        let sender = match EmailAddress::parse(path) {
            Ok(sender) => sender,
            Err(error) => {
                return self.refuse(
                    connection,
                    "bad_syntax",
                    &format!("501 5.1.7 The sender address {error}"),
                );
            }
        };
        let Some(caller) = &self.caller else {
            self.phase = Phase::Transaction(Transaction {
                sender: Some(sender),
                recipients: Vec::new(),
                report,
            });
            return self.ok(connection, "250 2.1.0 Sender OK");
        };
        if !caller.may_send_from(sender.domain()) {
            return self.refuse(
                connection,
                "sender_not_allowed",
                &format!(
                    "550 5.7.1 This caller may not send from the domain {}",
                    sender.domain()
                ),
            );
        }
        if let Err(limited) = self.context.services.rate_limiter.check(&caller.sub) {
            self.context.services.metrics.rate_limited.inc();
            return self.refuse(
                connection,
                "rate_limited",
                &format!(
                    "451 4.7.1 Rate limit exceeded, try again in {} s",
                    limited.retry_after
                ),
            );
        }
        self.phase = Phase::Transaction(Transaction {
            sender: Some(sender),
            recipients: Vec::new(),
            report: false,
        });
        self.ok(connection, "250 2.1.0 Sender OK");
    }

    fn rcpt(&mut self, connection: &mut Connection, rest: &str) {
        let max = self.context.settings.max_recipients;
        let Phase::Transaction(transaction) = &mut self.phase else {
            return self.refuse(connection, "bad_sequence", "503 5.5.1 Send MAIL first");
        };
        let Some((path, _parameters)) = path_argument(rest, "TO:") else {
            return self.refuse(
                connection,
                "bad_syntax",
                "501 5.5.4 Syntax: RCPT TO:<address>",
            );
        };
        let recipient = match EmailAddress::parse(path) {
            Ok(recipient) => recipient,
            Err(error) => {
                return self.refuse(
                    connection,
                    "bad_syntax",
                    &format!("501 5.1.3 The recipient address {error}"),
                );
            }
        };
        // Without AUTH, only the return paths of messages posthorn sent: never an open relay.
        if transaction.report && !self.context.services.reports.is_return_path(&recipient) {
            return self.refuse(
                connection,
                "relay_denied",
                "550 5.7.1 Relay access denied: authenticate to send mail",
            );
        }
        if transaction.recipients.len() >= max {
            return self.refuse(
                connection,
                "too_many_recipients",
                &format!("452 4.5.3 Too many recipients (at most {max} per message)"),
            );
        }
        if !transaction
            .recipients
            .iter()
            .any(|known| known.as_str().eq_ignore_ascii_case(recipient.as_str()))
        {
            transaction.recipients.push(recipient);
        }
        self.ok(connection, "250 2.1.5 Recipient OK");
    }

    /// DATA: the message, read to its final dot, checked, committed and answered. A connection that
    /// fails or stalls part-way is closed (nothing of that message was accepted).
    async fn data(&mut self, connection: &mut Connection, rest: &str) -> Next {
        let transaction = match &self.phase {
            Phase::Transaction(transaction) if !transaction.recipients.is_empty() => transaction,
            Phase::Transaction(_) => {
                self.refuse(connection, "bad_sequence", "554 5.5.1 No valid recipients");
                return Next::Continue;
            }
            _ => {
                self.refuse(
                    connection,
                    "bad_sequence",
                    "503 5.5.1 Send MAIL and RCPT first",
                );
                return Next::Continue;
            }
        };
        if !rest.is_empty() {
            self.refuse(connection, "bad_syntax", "501 5.5.4 DATA takes no argument");
            return Next::Continue;
        }
        connection.reply("354 Start mail input; end with <CRLF>.<CRLF>");
        let limit = self.context.settings.max_message_size;
        let read = data::read(connection, limit, self.context.settings.command_timeout).await;
        let sender = transaction.sender.clone();
        let recipients = transaction.recipients.clone();
        let report = transaction.report;
        self.phase = Phase::Ready;
        let message = match read {
            Err(_) => {
                connection.reply("421 4.4.2 Timeout or error reading the message, closing");
                return Next::Quit;
            }
            Ok(DataOutcome::TooLarge) => {
                self.context
                    .services
                    .metrics
                    .submission_messages
                    .with_label_values(&["refused"])
                    .inc();
                self.refuse(
                    connection,
                    "too_large",
                    &format!("552 5.3.4 Message size exceeds the limit of {limit} octets"),
                );
                return Next::Continue;
            }
            Ok(DataOutcome::LineTooLong) => {
                self.refuse(
                    connection,
                    "line_too_long",
                    "550 5.6.0 The message has a line longer than 998 octets (RFC 5322 2.1.1)",
                );
                return Next::Continue;
            }
            Ok(DataOutcome::Message(message)) => message,
        };
        if report {
            let reply = match self
                .context
                .services
                .reports
                .ingest_mail(&recipients, &message)
                .await
            {
                Ok(_) => "250 2.0.0 Report received".to_owned(),
                Err(error) => {
                    tracing::warn!(error = %crate::telemetry::error_chain(&error), "recording a report failed");
                    "451 4.3.0 The report could not be recorded, try again later".to_owned()
                }
            };
            if reply.starts_with('2') {
                self.ok(connection, &reply);
            } else {
                self.refuse(connection, "unavailable", &reply);
            }
            return Next::Continue;
        }
        let Some(sender) = sender else {
            self.refuse(
                connection,
                "bad_syntax",
                "501 5.1.7 A sender address is required",
            );
            return Next::Continue;
        };
        match self.accept(&message, sender, recipients).await {
            Ok(reply) => self.ok(connection, &reply),
            Err((reason, reply)) => {
                let result = if reply.starts_with('4') {
                    "deferred"
                } else {
                    "refused"
                };
                self.context
                    .services
                    .metrics
                    .submission_messages
                    .with_label_values(&[result])
                    .inc();
                self.refuse(connection, reason, &reply);
            }
        }
        Next::Continue
    }

    /// Checks and commits one message; the reply to its final dot.
    async fn accept(
        &mut self,
        data: &[u8],
        sender: EmailAddress,
        recipients: Vec<EmailAddress>,
    ) -> Result<String, (&'static str, String)> {
        let services = &self.context.services;
        let Some(caller) = &self.caller else {
            return Err(("auth_required", "530 5.7.0 Authentication required".into()));
        };
        let parsed = RawSubmission {
            data,
            sender: Some(sender),
            recipients: Some(recipients),
            source: Source::Smtp,
        }
        .parse(services.acceptor.limits(), OffsetDateTime::now_utc())
        .map_err(refusal)?;
        let idempotency = parsed.given_message_id.as_deref().map(|message_id| {
            (
                IdempotencyKey::for_message_id(message_id),
                RequestFingerprint::of_bytes(data),
            )
        });
        let submission = Submission {
            message: parsed.message,
            idempotency,
        };
        match services.acceptor.accept(caller, submission).await {
            Ok(receipt) => {
                let result = if receipt.replayed {
                    "replayed"
                } else {
                    "accepted"
                };
                services
                    .metrics
                    .submission_messages
                    .with_label_values(&[result])
                    .inc();
                if let Some(file) = &self.context.hold_reply {
                    let _ = std::fs::write(file, receipt.id.to_string());
                    tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                }
                Ok(format!("250 2.0.0 queued as {}", receipt.id))
            }
            Err(error) => Err(match error {
                AcceptError::NotPermitted => (
                    "auth_failed",
                    "550 5.7.1 This caller may not send messages".into(),
                ),
                AcceptError::SenderNotAllowed(domain) => (
                    "sender_not_allowed",
                    format!("550 5.7.1 This caller may not send from the domain {domain}"),
                ),
                AcceptError::NoRoute => (
                    "no_route",
                    "554 5.3.0 No route of this gateway takes this message".into(),
                ),
                AcceptError::IdempotencyKeyReused | AcceptError::RefusedBefore => (
                    "message_id_reused",
                    "550 5.7.0 This Message-ID was already used with a different message".into(),
                ),
                AcceptError::Store(StoreError::Unavailable(_) | StoreError::NotMigrated) => (
                    "unavailable",
                    "451 4.3.0 The queue is temporarily unavailable, try again later".into(),
                ),
                AcceptError::Store(error) => {
                    tracing::error!(
                        error = %crate::telemetry::error_chain(&error),
                        "committing a submitted message failed"
                    );
                    (
                        "unavailable",
                        "451 4.3.0 Local error, try again later".into(),
                    )
                }
            }),
        }
    }
}

/// The reply to a message that breaks a rule of its own.
fn refusal(error: DomainError) -> (&'static str, String) {
    match &error {
        DomainError::TooManyAttachments { .. } | DomainError::Attachment { .. } => {
            ("too_large", format!("552 5.3.4 {error}"))
        }
        DomainError::TooManyRecipients { .. } => {
            ("too_many_recipients", format!("452 4.5.3 {error}"))
        }
        DomainError::InvalidField { field, reason } if field == "message" => {
            let kind = if reason.contains("bare CR or LF") {
                "bare_line_ending"
            } else if reason.contains("longer than 998") {
                "line_too_long"
            } else if reason.contains("NUL") {
                "nul"
            } else {
                "invalid_message"
            };
            (kind, format!("550 5.6.0 The message {reason}"))
        }
        _ => ("invalid_message", format!("550 5.6.0 {error}")),
    }
}

/// `FROM:<path> params` (or `TO:`): the path without its angle brackets, and the parameters.
fn path_argument<'a>(rest: &'a str, keyword: &str) -> Option<(&'a str, &'a str)> {
    let after = rest
        .get(..keyword.len())
        .filter(|head| head.eq_ignore_ascii_case(keyword))
        .map(|_| rest[keyword.len()..].trim_start())?;
    let inner = after.strip_prefix('<')?;
    let end = inner.find('>')?;
    Some((&inner[..end], inner[end + 1..].trim()))
}

#[cfg(test)]
mod tests {
    use super::path_argument;

    #[test]
    fn paths_and_parameters() {
        assert_eq!(
            path_argument("FROM:<a@example.com> SIZE=10", "FROM:"),
            Some(("a@example.com", "SIZE=10"))
        );
        assert_eq!(path_argument("from: <>", "FROM:"), Some(("", "")));
        assert_eq!(path_argument("TO:b@example.com", "TO:"), None);
        assert_eq!(path_argument("FRM:<a@b>", "FROM:"), None);
    }
}
