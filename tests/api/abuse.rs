//! Hostile input that must never reach the wire as anything but data: SMTP smuggling sequences in every
//! body part, oversized header sets.

use std::time::Duration;

use base64::Engine;
use serde_json::json;

use crate::support::smtp::SmtpServer;
use crate::support::{assert_problem, spawn_app, spawn_delivering_app, valid_message};

/// End-of-data variants a lenient server might accept (SMTP smuggling), each followed by a smuggled
/// second transaction.
const SMUGGLED: [&str; 5] = ["\n.\n", "\n.\r\n", "\r.\r", "\r\n.\r", "\r\n.\r\n"];

fn smuggling_payload(variant: &str) -> String {
    format!(
        "before{variant}MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nSubject: smuggled\r\n\r\nowned{variant}after"
    )
}

#[tokio::test]
async fn every_end_of_data_variant_is_delivered_as_data_inside_one_message() {
    let smtp = SmtpServer::start().await;
    let app = spawn_delivering_app(&smtp, |_| {}).await;
    let mut ids = Vec::new();
    for variant in SMUGGLED {
        let payload = smuggling_payload(variant);
        let mut body = valid_message();
        body["text"] = json!(payload);
        body["html"] = json!(format!("<p>{payload}</p>"));
        body["attachments"] = json!([{
            "filename": "smuggle.txt",
            "content_type": "text/plain",
            "content": base64::engine::general_purpose::STANDARD.encode(payload.as_bytes()),
        }]);
        ids.push(app.accept(&body).await);
    }
    for id in &ids {
        app.wait_for_status(id, "sent", Duration::from_secs(15))
            .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let received = smtp.received();
    assert_eq!(
        received.len(),
        SMUGGLED.len(),
        "one message per request, nothing smuggled"
    );
    for mail in &received {
        assert_eq!(mail.from, "shop@example.com");
        assert_eq!(
            mail.to,
            vec!["customer@example.org"],
            "no smuggled recipient"
        );
        for (index, byte) in mail.raw.iter().enumerate() {
            if *byte == b'\n' {
                assert_eq!(mail.raw[index - 1], b'\r', "bare LF on the wire");
            }
            if *byte == b'\r' {
                assert_eq!(mail.raw.get(index + 1), Some(&b'\n'), "bare CR on the wire");
            }
        }
        let lines: Vec<&[u8]> = mail.raw.split(|b| *b == b'\n').collect();
        assert!(
            !lines.iter().any(|line| *line == b".\r"),
            "a lone dot line inside the data would end it"
        );
    }
    // The server saw exactly one MAIL and one DATA per message.
    let commands = smtp.commands();
    assert_eq!(
        commands.iter().filter(|c| *c == "MAIL").count(),
        SMUGGLED.len()
    );
    assert_eq!(
        commands.iter().filter(|c| *c == "DATA").count(),
        SMUGGLED.len()
    );
}

#[tokio::test]
async fn header_count_and_length_are_bounded() {
    let app = spawn_app().await;
    let mut body = valid_message();
    let many: serde_json::Map<String, serde_json::Value> =
        (0..51).map(|i| (format!("X-H{i}"), json!("v"))).collect();
    body["headers"] = json!(many);
    assert_problem(app.send(&body).await, 422, "too-many-headers").await;
    let mut body = valid_message();
    body["headers"] = json!({"X-Long": "v".repeat(999)});
    assert_problem(app.send(&body).await, 422, "invalid-header").await;
    let mut body = valid_message();
    body["headers"] = json!({format!("X-{}", "n".repeat(80)): "v"});
    assert_problem(app.send(&body).await, 422, "invalid-header").await;
    let mut body = valid_message();
    body["subject"] = json!("s".repeat(999));
    assert_problem(app.send(&body).await, 422, "invalid-field").await;
    assert_eq!(app.message_count().await, 0);
}
