//! The suppression list's reasons.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::status::UnknownStatus;

/// Why an address is on the suppression list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SuppressionReason {
    /// A permanent refusal about the address (enhanced status 5.1.x or 5.2.1), at once or bounced later.
    HardBounce,
    /// The recipient reported a message as spam.
    Complaint,
    /// An operator added it.
    Manual,
}

impl SuppressionReason {
    /// Every reason.
    pub const ALL: [SuppressionReason; 3] = [
        SuppressionReason::HardBounce,
        SuppressionReason::Complaint,
        SuppressionReason::Manual,
    ];

    /// The name used in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            SuppressionReason::HardBounce => "hard_bounce",
            SuppressionReason::Complaint => "complaint",
            SuppressionReason::Manual => "manual",
        }
    }
}

impl fmt::Display for SuppressionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SuppressionReason {
    type Err = UnknownStatus;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        SuppressionReason::ALL
            .into_iter()
            .find(|reason| reason.as_str() == text)
            .ok_or_else(|| UnknownStatus::new(text, "hard_bounce, complaint or manual"))
    }
}

/// Whether an enhanced status code (RFC 3463) says the address itself is bad: 5.1.x (no such mailbox,
/// bad destination, ...) or 5.2.1 (mailbox disabled). Policy refusals (5.7.x) are about the sender or
/// the content, and full mailboxes (5.2.2) may empty: neither suppresses.
pub fn is_hard_bounce(enhanced: &str) -> bool {
    enhanced.starts_with("5.1.") || enhanced == "5.2.1"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_address_failures_are_hard_bounces() {
        for code in ["5.1.1", "5.1.10", "5.2.1"] {
            assert!(is_hard_bounce(code), "{code}");
        }
        for code in ["5.7.1", "5.2.2", "4.1.1", "5.0.0", "5.3.4"] {
            assert!(!is_hard_bounce(code), "{code}");
        }
    }
}
