//! One SMTP client session and where it stands. The session's state is one value, moved by one
//! transition per step of a transaction, and [`SessionState::reuse`] is the one place that decides what
//! the pool may do with a session.

use std::sync::Arc;
use std::time::Instant;

use lettre::transport::smtp::client::AsyncSmtpConnection;

use super::wire::Activity;

/// Where a session stands between two exchanges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Between transactions: the next MAIL may be sent.
    Ready,
    /// A transaction is under way. A session still in this state when it is handed back was dropped
    /// mid-exchange (its sender was cancelled at shutdown).
    Transaction,
    /// The next message's envelope went out with the last message's data: its replies are still to be
    /// read, by the sender that sent it.
    EnvelopeSent,
    /// The last transaction ended part-way (a refusal before the data): RSET before the next MAIL.
    Aborted,
    /// Unusable: an I/O error, a timeout, or 421.
    Broken,
}

/// What the pool may do with a session handed back to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// Use it again as it is.
    AsIs,
    /// Use it again after a successful RSET.
    AfterReset,
    /// Close it; the reason is for the log.
    Never(&'static str),
}

impl SessionState {
    /// What the pool may do with a session in this state.
    pub fn reuse(self) -> Reuse {
        match self {
            SessionState::Ready => Reuse::AsIs,
            SessionState::Aborted => Reuse::AfterReset,
            SessionState::Transaction | SessionState::EnvelopeSent => {
                Reuse::Never("a transaction was left half-sent")
            }
            SessionState::Broken => Reuse::Never("the connection is broken"),
        }
    }
}

/// One SMTP session with its bookkeeping.
pub struct SmtpConnection {
    pub(super) inner: AsyncSmtpConnection,
    state: SessionState,
    last_used: Instant,
    /// Messages sent on this connection, to tell a reused connection from a fresh one.
    transactions: u64,
    /// The server offers PIPELINING and the upstream allows it: a transaction's envelope goes in one
    /// write.
    pub(super) pipelining: bool,
    /// What its socket did last.
    pub(super) activity: Arc<Activity>,
}

impl SmtpConnection {
    /// A freshly opened session, greeted and ready.
    pub(super) fn new(
        inner: AsyncSmtpConnection,
        pipelining: bool,
        activity: Arc<Activity>,
    ) -> Self {
        Self {
            inner,
            state: SessionState::Ready,
            last_used: Instant::now(),
            transactions: 0,
            pipelining,
            activity,
        }
    }

    /// Where the session stands.
    pub fn state(&self) -> SessionState {
        self.state
    }

    /// Whether a message was sent on this session before (a server may have closed it meanwhile).
    pub(super) fn reused(&self) -> bool {
        self.transactions > 0
    }

    /// How long since the last transaction ended (or the session opened).
    pub(super) fn idle(&self) -> std::time::Duration {
        self.last_used.elapsed()
    }

    /// A transaction starts; returns whether its envelope already went out with the previous message's
    /// data (its replies are then the next thing to read).
    pub(super) fn begin(&mut self) -> bool {
        std::mem::replace(&mut self.state, SessionState::Transaction) == SessionState::EnvelopeSent
    }

    /// The transaction was refused part-way: RSET before the next one (a broken session stays broken).
    pub(super) fn abort(&mut self) {
        if self.state != SessionState::Broken {
            self.state = SessionState::Aborted;
        }
    }

    /// The session is gone.
    pub(super) fn break_off(&mut self) {
        self.state = SessionState::Broken;
    }

    /// Breaks the session off when `ended` says the exchange ended it.
    pub(super) fn break_off_if(&mut self, ended: bool) {
        if ended {
            self.break_off();
        }
    }

    /// The transaction is over. A session it left aborted or broken stays so; otherwise it is ready,
    /// or, with `next_envelope_sent`, waits for the replies to the next message's envelope.
    pub(super) fn finish(&mut self, next_envelope_sent: bool) {
        if self.state == SessionState::Transaction {
            self.state = if next_envelope_sent {
                SessionState::EnvelopeSent
            } else {
                SessionState::Ready
            };
        }
        self.last_used = Instant::now();
        self.transactions += 1;
    }

    /// RSET succeeded: ready again.
    pub(super) fn reset(&mut self) {
        if self.state == SessionState::Aborted {
            self.state = SessionState::Ready;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_ready_or_aborted_session_is_reused() {
        assert_eq!(SessionState::Ready.reuse(), Reuse::AsIs);
        assert_eq!(SessionState::Aborted.reuse(), Reuse::AfterReset);
        for state in [
            SessionState::Transaction,
            SessionState::EnvelopeSent,
            SessionState::Broken,
        ] {
            assert!(matches!(state.reuse(), Reuse::Never(_)), "{state:?}");
        }
    }
}
