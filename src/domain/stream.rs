//! Streams (priority lanes): `transactional` mail (receipts, password resets) goes before `broadcast`
//! mail (newsletters, announcements) queued at the same time, so a large broadcast never holds up a
//! password reset; broadcast still gets a share of every claim, so it is never starved.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The stream a message is sent in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Mail a person is waiting for: claimed first.
    #[default]
    Transactional,
    /// Bulk mail: claimed after transactional mail, with a share of every claim.
    Broadcast,
}

impl Stream {
    /// Every stream.
    pub const ALL: [Stream; 2] = [Stream::Transactional, Stream::Broadcast];

    /// The name in the API, the `X-Posthorn-Stream` header, routes and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Transactional => "transactional",
            Stream::Broadcast => "broadcast",
        }
    }

    /// A stream by name (exact, lower case; surrounding space is ignored).
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        Self::ALL
            .into_iter()
            .find(|stream| stream.as_str().eq_ignore_ascii_case(text))
    }

    /// Its lane in the queue: lower lanes are claimed first.
    pub fn lane(self) -> i16 {
        match self {
            Stream::Transactional => 0,
            Stream::Broadcast => 1,
        }
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_transactional_goes_first() {
        for stream in Stream::ALL {
            assert_eq!(Stream::parse(stream.as_str()), Some(stream));
        }
        assert_eq!(Stream::parse(" Broadcast "), Some(Stream::Broadcast));
        assert_eq!(Stream::parse("bulk"), None);
        assert_eq!(Stream::default(), Stream::Transactional);
        assert!(Stream::Transactional.lane() < Stream::Broadcast.lane());
    }
}
