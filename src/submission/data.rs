//! Reading a message after DATA (RFC 5321 §4.1.1.4): line by line to the final `.`, dot-stuffing undone,
//! never keeping more than the size limit.
//!
//! The message ends only at CRLF `.` CRLF: a `.` line after a line that ended in a bare LF or CR is not an
//! end (so `<LF>.<LF>`, `<LF>.<CRLF>` and `<CR>.<CR>` never split one message into two, the smuggling of
//! CVE-2023-51764/5/6); such a line stays in the message, which the accept path then refuses for its
//! bare line ending.

use std::io;
use std::time::Duration;

use super::stream::Connection;

/// The longest line kept: 998 octets, CRLF, and a stuffed dot.
const MAX_LINE: usize = 998 + 2 + 1;

/// What the client sent after DATA.
pub(super) enum DataOutcome {
    /// The message, dot-stuffing undone, lines as they came.
    Message(Vec<u8>),
    /// More than the size limit: read to its end and dropped.
    TooLarge,
    /// A line longer than 998 octets: read to its end and dropped.
    LineTooLong,
}

/// Reads to the final dot; each line must come within `timeout`.
pub(super) async fn read(
    connection: &mut Connection,
    limit: usize,
    timeout: Duration,
) -> io::Result<DataOutcome> {
    let mut message = Vec::with_capacity(limit.min(64 * 1024));
    let mut size = 0usize;
    let mut too_large = false;
    let mut too_long = false;
    // The first line follows the CRLF of the DATA command.
    let mut after_crlf = true;
    loop {
        let line = tokio::time::timeout(timeout, connection.read_line(MAX_LINE))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no data within the timeout"))??
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "closed during DATA"))?;
        let starts_line = after_crlf;
        if starts_line && line.bytes == b".\r\n" {
            break;
        }
        after_crlf = line.ends_crlf;
        too_long |= line.overlong;
        let bytes = match line.bytes.strip_prefix(b".") {
            Some(unstuffed) if starts_line => unstuffed,
            _ => &line.bytes[..],
        };
        size += line.length - (line.bytes.len() - bytes.len());
        if size > limit {
            too_large = true;
            message = Vec::new();
        }
        if !too_large && !too_long {
            message.extend_from_slice(bytes);
        }
    }
    Ok(if too_large {
        DataOutcome::TooLarge
    } else if too_long {
        DataOutcome::LineTooLong
    } else {
        DataOutcome::Message(message)
    })
}
