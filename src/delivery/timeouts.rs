//! How long each phase of an SMTP session may take (RFC 5321 §4.5.3.2).
//!
//! A reply that does not come in time ends the session. Before the data's final `.` that costs only a
//! retry; after it the upstream may well have taken the message, and a retry is then a duplicate. So
//! the wait for the final reply is the longest (RFC 5321 asks for 10 minutes, as Postfix's
//! `smtp_data_done_timeout` has it), and the lease of a message in flight is renewed meanwhile rather
//! than sized to the longest possible session.

use std::time::Duration;

/// Deadlines of the phases of one SMTP session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// The TCP connection (and an implicit TLS handshake).
    pub connect: Duration,
    /// The exchanges that open the session, together: the greeting, EHLO, STARTTLS and AUTH.
    pub greeting: Duration,
    /// The reply to MAIL (and to RSET or NOOP on a pooled connection).
    pub mail: Duration,
    /// The reply to each RCPT.
    pub rcpt: Duration,
    /// The reply to DATA (354).
    pub data: Duration,
    /// Each write of the message's data: the transfer must make progress at least this often.
    pub block: Duration,
    /// The reply to the final `.`.
    pub done: Duration,
}

impl Default for Timeouts {
    /// RFC 5321's values, except for opening the session: its 5 minutes would hold a message that long
    /// before it fails over to the route's next provider. A TCP connect that has not completed in
    /// 30 s (Postfix's `smtp_connect_timeout`) is not going to, and a healthy server greets within a
    /// second; 60 s leaves room for a server that delays its banner on purpose under load.
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(30),
            greeting: Duration::from_secs(60),
            mail: Duration::from_secs(5 * 60),
            rcpt: Duration::from_secs(5 * 60),
            data: Duration::from_secs(2 * 60),
            block: Duration::from_secs(3 * 60),
            done: Duration::from_secs(10 * 60),
        }
    }
}

impl Timeouts {
    /// The same deadline for every phase.
    pub fn uniform(timeout: Duration) -> Self {
        Self {
            connect: timeout,
            greeting: timeout,
            mail: timeout,
            rcpt: timeout,
            data: timeout,
            block: timeout,
            done: timeout,
        }
    }

    /// Opening a session: the TCP connection, then every exchange before the first MAIL (the
    /// greeting, EHLO, STARTTLS, EHLO again and AUTH) within one `greeting` deadline.
    pub fn open(&self) -> Duration {
        self.connect + self.greeting
    }

    /// The phases by name, as they are configured.
    pub fn named(&self) -> [(&'static str, Duration); 7] {
        [
            ("connect", self.connect),
            ("greeting", self.greeting),
            ("mail", self.mail),
            ("rcpt", self.rcpt),
            ("data", self.data),
            ("block", self.block),
            ("done", self.done),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_rfc_5321s_past_the_greeting() {
        let defaults = Timeouts::default();
        assert_eq!(defaults.mail, Duration::from_secs(300));
        assert_eq!(defaults.rcpt, Duration::from_secs(300));
        assert_eq!(defaults.data, Duration::from_secs(120));
        assert_eq!(defaults.block, Duration::from_secs(180));
        assert_eq!(defaults.done, Duration::from_secs(600));
        assert_eq!(defaults.open(), Duration::from_secs(90));
    }
}
