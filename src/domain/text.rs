//! Checks on text that ends up in a header, whichever field it comes from.

use mail_parser::HeaderValue;
use mail_parser::parsers::MessageStream;

/// Bidirectional control characters: they reorder what a reader sees, so that
/// `invoice\u{202E}fdp.exe` shows as "invoiceexe.pdf".
const BIDI_CONTROLS: &[char] = &[
    '\u{200E}', '\u{200F}', '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}',
    '\u{2067}', '\u{2068}', '\u{2069}',
];

/// Whether `text` holds a bidirectional control character (U+200E, U+200F, U+202A-U+202E,
/// U+2066-U+2069).
pub fn has_bidi_control(text: &str) -> bool {
    text.contains(BIDI_CONTROLS)
}

/// Whether `text` holds RFC 2047 encoded-words (`=?charset?B?...?=`) that decode to a control character
/// other than tab. Sent as the caller wrote them, a reader would decode them into, say, a line break
/// and a `Bcc:` header. Decoded as a reader would, by mail-parser.
pub fn hides_control_characters(text: &str) -> bool {
    if !text.contains("=?") {
        return false;
    }
    let line = format!("{text}\n");
    match MessageStream::new(line.as_bytes()).parse_unstructured() {
        HeaderValue::Text(decoded) => decoded.chars().any(|c| c.is_control() && c != '\t'),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bidi_controls_are_found() {
        assert!(has_bidi_control("invoice\u{202E}fdp.exe"));
        assert!(has_bidi_control("a\u{2066}b"));
        assert!(!has_bidi_control("Grüße, אבג"));
    }

    #[test]
    fn encoded_words_are_decoded_before_they_are_judged() {
        // "x\r\nBcc: victim@example.com" in base64 and in Q-encoding.
        assert!(hides_control_characters(
            "=?utf-8?B?eA0KQmNjOiB2aWN0aW1AZXhhbXBsZS5jb20=?="
        ));
        assert!(hides_control_characters(
            "Hi =?utf-8?Q?x=0D=0ABcc:_v@example.com?="
        ));
        assert!(hides_control_characters("=?utf-8?Q?a=00b?="));
        assert!(!hides_control_characters("=?utf-8?B?R3LDvMOfZQ==?="));
        assert!(!hides_control_characters("=?utf-8?Q?tab=09ok?="));
        assert!(!hides_control_characters("plain text, no words"));
    }
}
