//! A property of the accept path and the composer together: for any message the API accepts, the MIME
//! that goes on the wire has no line over 998 octets and no bare CR or LF, has exactly the headers the
//! message implies (one `From`, one `Subject`, no `Bcc`), and parses back (mail-parser, as a reader
//! would) to the same addresses, subject and bodies. (A caller's own RFC 2047 encoded-words are sent as
//! written and read decoded, so the generated text holds none; their checks are in `hardening`.)

use std::time::SystemTime;

use posthorn::api::MessageDraft;
use posthorn::delivery::{Composition, compose};
use posthorn::domain::Limits;
use proptest::prelude::*;
use serde_json::{Value, json};
use time::OffsetDateTime;

/// Text of a header: words of letters, digits, punctuation, specials, non-ASCII, sometimes a word too
/// long for a line, joined by single spaces or tabs.
fn header_text(max_words: usize) -> impl Strategy<Value = String> {
    let word = prop_oneof![
        16 => "[a-zA-Z0-9.,!?'\"()<>@;:=_/-]{1,12}",
        4 => "[éüß你好😀ÆØ]{1,6}",
        1 => "[a-z]{80,900}",
    ];
    (
        prop::collection::vec(word, 0..max_words),
        prop::collection::vec(prop_oneof![4 => Just(" "), 1 => Just("\t")], max_words),
    )
        .prop_map(|(words, gaps)| {
            let mut text = String::new();
            for (index, word) in words.iter().enumerate() {
                if index > 0 {
                    text.push_str(gaps[index]);
                }
                text.push_str(word);
            }
            text
        })
}

fn address() -> impl Strategy<Value = String> {
    (
        "[a-z0-9]{1,10}([._+-][a-z0-9]{1,8}){0,3}",
        "[a-z]{1,20}\\.(org|example|com)",
    )
        .prop_map(|(local, domain)| format!("{local}@{domain}"))
}

/// A mailbox as a caller writes it: bare, or with a display name quoted as RFC 5322 asks.
fn mailbox() -> impl Strategy<Value = (Option<String>, String)> {
    let name = prop_oneof![
        "[A-Za-z][A-Za-z .'-]{0,30}[A-Za-z]",
        "[A-Za-zéü你, <>@\"\\\\]{1,40}",
    ];
    (prop::option::of(name), address())
}

fn written((name, address): &(Option<String>, String)) -> String {
    match name {
        None => address.clone(),
        Some(name) => {
            let escaped = name.replace('\\', "\\\\").replace('"', "\\\"");
            format!("\"{escaped}\" <{address}>")
        }
    }
}

fn body_text() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        6 => "[a-zA-Z0-9 .,:;!?éü你-]{0,100}",
        1 => "\\.[a-z .]{0,10}",
        1 => "[a-z]{900,1500}",
    ];
    (
        prop::collection::vec(line, 1..12),
        prop::collection::vec(prop_oneof![Just("\r\n"), Just("\n"), Just("\r")], 12),
    )
        .prop_map(|(lines, breaks)| {
            let mut text = String::new();
            for (index, line) in lines.iter().enumerate() {
                if index > 0 {
                    text.push_str(breaks[index]);
                }
                text.push_str(line);
            }
            text
        })
}

fn draft() -> impl Strategy<Value = Value> {
    (
        mailbox(),
        prop::collection::vec(mailbox(), 1..6),
        prop::collection::vec(mailbox(), 0..4),
        prop::collection::vec(mailbox(), 0..3),
        prop::collection::vec(mailbox(), 0..3),
        header_text(24),
        prop::option::of(body_text()),
        prop::option::of(body_text()),
        prop::collection::btree_map("X-[A-Z][a-z]{1,10}", header_text(20), 0..3),
        prop::collection::vec(
            (
                "[a-zA-Z0-9 ._éü-]{1,255}",
                prop::option::of("(text/plain|application/pdf|image/png)(; charset=utf-8)?"),
            ),
            0..3,
        ),
    )
        .prop_map(
            |(from, to, cc, bcc, reply_to, subject, text, html, headers, files)| {
                let list = |mailboxes: &[(Option<String>, String)]| {
                    mailboxes.iter().map(written).collect::<Vec<_>>()
                };
                json!({
                    "from": written(&from),
                    "to": list(&to),
                    "cc": list(&cc),
                    "bcc": list(&bcc),
                    "reply_to": list(&reply_to),
                    "subject": subject,
                    "text": text.unwrap_or_else(|| "plain".into()),
                    "html": html,
                    "headers": headers,
                    "attachments": files
                        .iter()
                        .map(|(filename, content_type)| json!({
                            "filename": filename,
                            "content": "aGVsbG8gd29ybGQ=",
                            "content_type": content_type,
                        }))
                        .collect::<Vec<_>>(),
                })
            },
        )
}

/// Line breaks as one LF, and without the trailing ones, for comparing bodies.
fn lines(text: &str) -> String {
    text.replace("\r\n", "\n")
        .replace('\r', "\n")
        .trim_end_matches('\n')
        .to_owned()
}

fn addresses(list: Option<&mail_parser::Address<'_>>) -> Vec<String> {
    list.map(|list| {
        list.iter()
            .filter_map(|addr| addr.address().map(str::to_owned))
            .collect()
    })
    .unwrap_or_default()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn every_accepted_message_composes_to_sendable_mime_that_reads_back_the_same(body in draft()) {
        let draft: MessageDraft = serde_json::from_value(body).expect("the draft's shape");
        let Ok(message) = draft.into_message(&Limits::default(), OffsetDateTime::now_utc()) else {
            // Refused at accept: nothing is sent.
            return Ok(());
        };
        let content = &message.content;
        let wire = compose(&Composition {
            content,
            message_id: &message.message_id,
            date: SystemTime::now(),
        })
        .expect("an accepted message composes");

        let mut previous = 0u8;
        for (index, byte) in wire.iter().enumerate() {
            prop_assert!((*byte == b'\n') == (previous == b'\r'), "a bare CR or LF at {}", index);
            previous = *byte;
        }
        prop_assert_eq!(previous, b'\n', "ends with CRLF");
        for line in wire.split(|byte| *byte == b'\n') {
            prop_assert!(line.len() <= 999, "a line of {} octets", line.len() - 1);
        }

        let text = String::from_utf8_lossy(&wire);
        let head = text.split("\r\n\r\n").next().unwrap_or_default();
        let count = |name: &str| {
            head.split("\r\n")
                .filter(|line| line.to_ascii_lowercase().starts_with(&format!("{name}:")))
                .count()
        };
        prop_assert_eq!(count("from"), 1);
        prop_assert_eq!(count("subject"), 1);
        prop_assert_eq!(count("bcc"), 0);
        prop_assert_eq!(count("message-id"), 1);

        let parsed = mail_parser::MessageParser::default().parse(&wire).expect("it parses");
        let envelope = &content.envelope;
        let expected = |list: &[posthorn::domain::Mailbox]| {
            list.iter().map(|mailbox| mailbox.address.to_string()).collect::<Vec<_>>()
        };
        prop_assert_eq!(addresses(parsed.from()), vec![envelope.from.address.to_string()]);
        prop_assert_eq!(addresses(parsed.to()), expected(&envelope.to));
        prop_assert_eq!(addresses(parsed.cc()), expected(&envelope.cc));
        prop_assert_eq!(addresses(parsed.reply_to()), expected(&envelope.reply_to));
        if let Some(name) = &envelope.from.name {
            let parsed_name = parsed.from().and_then(|from| from.first()).and_then(|from| from.name());
            prop_assert_eq!(parsed_name, Some(name.as_str()));
        }
        prop_assert_eq!(parsed.subject().unwrap_or_default(), envelope.subject.as_str());
        let body = &content.body;
        if let Some(expected) = &body.text {
            let got = parsed.body_text(0).map(|text| lines(&text)).unwrap_or_default();
            prop_assert_eq!(got, lines(expected));
        }
        if let Some(expected) = &body.html {
            let got = parsed.body_html(0).map(|html| lines(&html)).unwrap_or_default();
            prop_assert_eq!(got, lines(expected));
        }
        for header in &body.headers {
            let raw = parsed.header_raw(header.name.as_str()).unwrap_or_default();
            prop_assert!(!raw.is_empty(), "{} is on the wire", header.name);
        }
    }
}
