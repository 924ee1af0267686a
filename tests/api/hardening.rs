//! What is accepted must be sendable, and no request can break reads or metrics: the answers to a
//! hostile-input probe, each as a black-box test.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::database::is_postgres;
use crate::support::process::Posthorn;
use crate::support::smtp::{Received, SmtpServer};
use crate::support::{
    TestApp, assert_problem, spawn_app, spawn_app_with, spawn_delivering_app, valid_message,
};

const WAIT: Duration = Duration::from_secs(15);

/// Every line of a received message is at most 998 octets; returns the longest header line.
#[track_caller]
fn assert_lines_fit(mail: &Received) -> usize {
    let data = mail.data();
    for line in data.split("\r\n") {
        assert!(line.len() <= 998, "a line of {} octets", line.len());
    }
    let head = data.split("\r\n\r\n").next().unwrap_or_default();
    head.split("\r\n").map(str::len).max().unwrap_or(0)
}

/// Sends `body` to an app delivering to `smtp`, expects 202, and returns what arrived.
async fn delivered(app: &TestApp, smtp: &SmtpServer, body: &Value) -> Received {
    let id = app.accept(body).await;
    app.wait_for_status(&id, "sent", WAIT).await;
    smtp.received().pop().expect("a message arrived")
}

#[tokio::test]
async fn the_largest_values_each_limit_allows_arrive_with_no_line_over_998_octets() {
    let smtp = SmtpServer::start().await;
    let app = spawn_delivering_app(&smtp, |_| {}).await;

    // 50 addresses (the default limit) of 64-character local parts, in each address field.
    let addresses: Vec<String> = (0..50)
        .map(|i| format!("{}{i:02}@example.org", "a".repeat(62)))
        .collect();
    let named: Vec<String> = (0..50)
        .map(|i| format!("Recipient Number {i} <r{i}@example.org>"))
        .collect();
    let mut body = valid_message();
    body["to"] = json!(addresses);
    body["cc"] = json!(named);
    body["reply_to"] = json!(addresses);
    let mail = delivered(&app, &smtp, &body).await;
    let longest = assert_lines_fit(&mail);
    // Folded between addresses: only an address longer than a line makes a longer one.
    assert!(longest <= 90, "address lists are folded: {longest} octets");
    assert_eq!(mail.to.len(), 100, "every envelope recipient");
    let to = mail.header("To").expect("a To header");
    assert_eq!(to.matches('@').count(), 50, "{to}");

    // A 998-character subject without a space, and one of words.
    for subject in ["x".repeat(998), "word ".repeat(199) + "end"] {
        let mut body = valid_message();
        body["subject"] = json!(subject);
        let mail = delivered(&app, &smtp, &body).await;
        let longest = assert_lines_fit(&mail);
        assert!(
            longest <= 78,
            "the subject is folded or encoded: {longest} octets"
        );
        let parsed = mail_parser::MessageParser::default()
            .parse(&mail.raw)
            .expect("the message parses");
        assert_eq!(parsed.subject(), Some(subject.as_str()));
    }

    // A custom header whose one word takes the whole line, and a 255-character content type.
    let word = "v".repeat(998 - "X-Long".len() - 2);
    let mut body = valid_message();
    body["headers"] = json!({"X-Long": word, "X-Words": "w".repeat(70) + &" word".repeat(185)});
    body["attachments"] = json!([{
        "filename": format!("{}.txt", "f".repeat(251)),
        "content": "aGk=",
        "content_type": format!("application/{}", "t".repeat(243)),
    }]);
    let mail = delivered(&app, &smtp, &body).await;
    assert_lines_fit(&mail);
    assert_eq!(mail.header("X-Long").as_deref(), Some(word.as_str()));
}

#[tokio::test]
async fn what_cannot_be_folded_is_refused_at_accept_naming_the_field() {
    let app = spawn_app().await;
    let mut body = valid_message();
    body["headers"] = json!({"X-Long": "v".repeat(998 - "X-Long".len() - 1)});
    let problem = assert_problem(app.send(&body).await, 422, "invalid-header").await;
    assert_eq!(problem["field"], "headers");
    assert!(
        problem["detail"].as_str().unwrap().contains("X-Long"),
        "{problem}"
    );

    let mut body = valid_message();
    body["attachments"] = json!([{
        "filename": "a.txt",
        "content": "aGk=",
        "content_type": format!("application/{}", "t".repeat(244)),
    }]);
    let problem = assert_problem(app.send(&body).await, 422, "invalid-attachment").await;
    assert_eq!(problem["field"], "attachments[0]");
}

#[tokio::test]
async fn a_send_at_outside_1970_to_9999_is_refused_and_reads_stay_whole() {
    let app = spawn_app().await;
    for send_at in [
        "0000-01-01T00:00:00+00:01",
        "1969-12-31T23:59:59Z",
        "9999-12-31T23:59:59-00:01",
    ] {
        let mut body = valid_message();
        body["send_at"] = json!(send_at);
        let problem = assert_problem(app.send(&body).await, 422, "invalid-send-at").await;
        assert_eq!(problem["field"], "send_at", "{send_at}");
    }
    let mut body = valid_message();
    body["send_at"] = json!("1970-01-01T00:00:00Z");
    let id = app.accept(&body).await;
    assert_eq!(app.message(&id).await["send_at"], "1970-01-01T00:00:00Z");
}

#[tokio::test]
async fn a_server_error_is_a_logged_problem_never_plain_text() {
    // A time no serializer can write, put into the store by hand (the API no longer accepts one).
    let app = spawn_app().await;
    let id = app.accept(&valid_message()).await;
    let update = if is_postgres() {
        format!("UPDATE messages SET send_at = '0002-01-01 00:00:00+00 BC' WHERE id = '{id}'")
    } else {
        format!("UPDATE messages SET send_at = -62198755200000000 WHERE id = '{id}'")
    };
    app.database.execute(&update).await;
    let problem = assert_problem(
        app.get(&format!("/v1/messages/{id}")).await,
        500,
        "internal",
    )
    .await;
    assert_eq!(problem["detail"], "internal error");
    let listing = app.get("/v1/messages").await;
    assert_problem(listing, 500, "internal").await;
}

#[tokio::test]
async fn invented_methods_share_one_label_value() {
    let app = spawn_app().await;
    for index in 0..20 {
        let method = reqwest::Method::from_bytes(format!("PRB{index:02}X").as_bytes()).unwrap();
        let response = app
            .client
            .request(method, format!("{}/healthz", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            405,
            "an invented method is still not allowed"
        );
    }
    let text = crate::support::wait_metrics(&app, |text| text.contains("method=\"other\"")).await;
    for line in text.lines().filter(|line| line.contains("method=\"")) {
        assert!(!line.contains("PRB"), "{line}");
    }
    let series = text
        .lines()
        .filter(|line| line.starts_with("posthorn_http_requests_total{") && line.contains("other"))
        .count();
    assert_eq!(series, 1, "{text}");
}

#[tokio::test]
async fn bidirectional_controls_are_refused_in_display_names_and_filenames() {
    let app = spawn_app().await;
    let mut body = valid_message();
    body["to"] = json!(["Ann\u{202E}nimda <a@example.org>"]);
    let problem = assert_problem(app.send(&body).await, 422, "invalid-address").await;
    assert_eq!(problem["field"], "to[0]");
    let mut body = valid_message();
    body["from"] = json!("Shop\u{2066} <shop@example.com>");
    let problem = assert_problem(app.send(&body).await, 422, "invalid-address").await;
    assert_eq!(problem["field"], "from");
    let mut body = valid_message();
    body["attachments"] = json!([{"filename": "invoice\u{202E}fdp.exe", "content": "aGk="}]);
    let problem = assert_problem(app.send(&body).await, 422, "invalid-attachment").await;
    assert_eq!(problem["field"], "attachments[0]");
}

#[tokio::test]
async fn encoded_words_that_decode_to_control_characters_are_refused() {
    let app = spawn_app().await;
    // "x\r\nBcc: victim@example.com", base64 in UTF-8 encoded-words.
    let hidden = "=?utf-8?B?eA0KQmNjOiB2aWN0aW1AZXhhbXBsZS5jb20=?=";
    let mut body = valid_message();
    body["subject"] = json!(format!("Hello {hidden}"));
    let problem = assert_problem(app.send(&body).await, 422, "invalid-field").await;
    assert_eq!(problem["field"], "subject");
    let mut body = valid_message();
    body["headers"] = json!({"X-Note": hidden});
    assert_problem(app.send(&body).await, 422, "invalid-header").await;
    let mut body = valid_message();
    body["to"] = json!([format!("{hidden} <a@example.org>")]);
    assert_problem(app.send(&body).await, 422, "invalid-address").await;
    // An encoded-word of plain text is the caller's business.
    let mut body = valid_message();
    body["subject"] = json!("=?utf-8?B?R3LDvMOfZQ==?=");
    assert_eq!(app.send(&body).await.status(), 202);
}

#[tokio::test]
async fn an_attachment_type_is_a_media_type_and_its_charset_only() {
    let smtp = SmtpServer::start().await;
    let app = spawn_delivering_app(&smtp, |_| {}).await;
    for content_type in [
        "text/plain; name=\"evil.exe\"",
        "multipart/mixed; boundary=frontier",
        "message/rfc822",
    ] {
        let mut body = valid_message();
        body["attachments"] =
            json!([{"filename": "safe.txt", "content": "aGk=", "content_type": content_type}]);
        let problem = assert_problem(app.send(&body).await, 422, "invalid-attachment").await;
        assert_eq!(problem["field"], "attachments[0]", "{content_type}");
    }
    let mut body = valid_message();
    body["attachments"] = json!([{
        "filename": "notes.txt",
        "content": "aGk=",
        "content_type": "Text/Plain; charset=\"utf-8\"",
    }]);
    let mail = delivered(&app, &smtp, &body).await;
    assert!(
        mail.data()
            .contains("Content-Type: text/plain; charset=utf-8"),
        "{}",
        mail.data()
    );
}

#[tokio::test]
async fn a_json_key_given_twice_is_refused_naming_it() {
    let app = spawn_app().await;
    let send = |raw: &'static str| {
        app.client
            .post(format!("{}/v1/send", app.address))
            .bearer_auth(app.default_token())
            .header("content-type", "application/json")
            .body(raw)
            .send()
    };
    let headers = send(
        r#"{"from":"a@example.com","to":"b@example.org","text":"x","headers":{"X-A":"1","X-A":"2"}}"#,
    )
    .await
    .unwrap();
    let problem = assert_problem(headers, 422, "invalid-request").await;
    assert_eq!(problem["field"], "headers");
    assert!(
        problem["detail"].as_str().unwrap().contains("`X-A`"),
        "{problem}"
    );
    let metadata = send(
        r#"{"from":"a@example.com","to":"b@example.org","text":"x","metadata":{"k":"1","k":"2"}}"#,
    )
    .await
    .unwrap();
    assert_eq!(
        assert_problem(metadata, 422, "invalid-request").await["field"],
        "metadata"
    );
    let top =
        send(r#"{"from":"a@example.com","to":"b@example.org","to":"c@example.org","text":"x"}"#)
            .await
            .unwrap();
    assert_eq!(
        assert_problem(top, 422, "invalid-request").await["field"],
        "to"
    );
}

#[tokio::test]
async fn a_tab_in_the_subject_and_a_quoted_display_name_with_specials_are_accepted() {
    let smtp = SmtpServer::start().await;
    let app = spawn_delivering_app(&smtp, |_| {}).await;
    let mut body = valid_message();
    body["subject"] = json!("Order\t42");
    body["to"] = json!(r#""a <b@x.example>" <c@example.com>"#);
    let mail = delivered(&app, &smtp, &body).await;
    assert_eq!(
        mail.to,
        vec!["c@example.com"],
        "the address, not the name's"
    );
    let parsed = mail_parser::MessageParser::default()
        .parse(&mail.raw)
        .expect("the message parses");
    assert_eq!(parsed.subject(), Some("Order\t42"));
    let to = parsed.to().and_then(|to| to.first()).expect("a To address");
    assert_eq!(to.name(), Some("a <b@x.example>"));
    assert_eq!(to.address(), Some("c@example.com"));
}

/// Opens a connection and sends a request head announcing a body of 100 bytes, and 10 of them.
async fn stalled_post(address: &str, token: &str) -> TcpStream {
    let host = address.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host).await.unwrap();
    let head = format!(
        "POST /v1/send HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"from\": \""
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_answered_408_and_the_connection_closed() {
    let app = spawn_app_with(|config| config.http_body_timeout = Duration::from_secs(1)).await;
    let started = Instant::now();
    let mut stream = stalled_post(&app.address, &app.default_token()).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection was closed, not left open");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(
        answer.contains("urn:posthorn:problem:request-timeout"),
        "{answer}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn malformed_http_is_counted_and_not_logged_as_an_error() {
    let database = crate::support::TestDatabase::create().await;
    let mut server = Posthorn::spawn(&[
        ("POSTHORN_DATABASE_URL", database.url()),
        ("POSTHORN_LOG", "info".to_owned()),
    ]);
    server.wait_ready().await;
    let host = server.address.trim_start_matches("http://").to_owned();
    for request in [
        "PRB 01X /healthz HTTP/1.1\r\n\r\n".to_owned(),
        "GET /healthz HTTP/9.9\r\n\r\n".to_owned(),
        format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nBad Header\r\n\r\n"),
        "\u{1}\u{2}\u{3} garbage\r\n\r\n".to_owned(),
    ] {
        let mut stream = TcpStream::connect(&host).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
        assert!(
            String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 400"),
            "{request:?}"
        );
    }
    let deadline = Instant::now() + WAIT;
    while server
        .metric("posthorn_http_malformed_requests_total")
        .await
        < 4.0
    {
        assert!(Instant::now() < deadline, "{}", server.metrics().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = server.stderr();
    assert!(!log.contains("\"level\":\"ERROR\""), "{log}");
}
