//! `POST /send`: what is accepted, and a precise problem for everything that is not.

use serde_json::{Value, json};

use crate::support::{assert_problem, spawn_app, spawn_app_with, valid_message};

#[tokio::test]
async fn a_valid_message_is_accepted_and_can_be_read_back() {
    let app = spawn_app().await;
    let response = app.send(&valid_message()).await;
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    let id = body["id"].as_str().unwrap();
    assert_eq!(body["status"], "queued");
    assert_eq!(location, format!("/v1/messages/{id}"));

    let message = app.message(id).await;
    assert_eq!(message["id"], id);
    assert_eq!(message["status"], "queued");
    assert_eq!(
        message["from"],
        json!({"name": "Shop", "address": "shop@example.com"})
    );
    assert_eq!(message["to"], json!([{"address": "customer@example.org"}]));
    assert_eq!(message["subject"], "Your order");
    assert_eq!(message["attempts"], json!([]));
    assert!(
        message["message_id"]
            .as_str()
            .unwrap()
            .ends_with("@example.com>")
    );
}

#[tokio::test]
async fn v1_send_is_the_same_operation() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(format!("{}/v1/send", app.address))
        .bearer_auth(app.default_token())
        .json(&valid_message())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
}

#[tokio::test]
async fn every_documented_field_is_accepted() {
    let app = spawn_app_with(|c| {
        c.max_schedule_ahead = std::time::Duration::from_secs(100 * 365 * 86400)
    })
    .await;
    let body = json!({
        "from": "\"Shop, Inc.\" <shop@example.com>",
        "to": ["a@example.org", "Bee <b@example.org>"],
        "cc": "c@example.org",
        "bcc": ["audit@example.com"],
        "reply_to": "support@example.com",
        "subject": "Grüße 🎉",
        "text": "plain",
        "html": "<p>html</p>",
        "headers": {"X-Campaign": "spring", "List-Unsubscribe": "<mailto:u@example.com>"},
        "attachments": [{"filename": "a.txt", "content": "aGVsbG8=", "content_type": "text/plain"}],
        "tags": ["order", "eu"],
        "metadata": {"order_id": "42"},
        "send_at": "2099-01-01T00:00:00Z"
    });
    let response = app.send(&body).await;
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let message = app.message(&id).await;
    assert_eq!(message["from"]["name"], "Shop, Inc.");
    assert_eq!(message["cc"], json!([{"address": "c@example.org"}]));
    assert_eq!(message["bcc"], json!([{"address": "audit@example.com"}]));
    assert_eq!(
        message["reply_to"],
        json!([{"address": "support@example.com"}])
    );
    assert_eq!(message["subject"], "Grüße 🎉");
    assert_eq!(message["tags"], json!(["order", "eu"]));
    assert_eq!(message["metadata"], json!({"order_id": "42"}));
    assert_eq!(message["send_at"], "2099-01-01T00:00:00Z");
    assert_eq!(message["next_attempt_at"], "2099-01-01T00:00:00Z");
}

#[tokio::test]
async fn malformed_json_is_a_400() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(format!("{}/send", app.address))
        .bearer_auth(app.default_token())
        .header("content-type", "application/json")
        .body("{\"from\": ")
        .send()
        .await
        .unwrap();
    assert_problem(response, 400, "malformed-json").await;
}

#[tokio::test]
async fn a_body_that_is_not_json_is_a_415() {
    let app = spawn_app().await;
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut request = app
            .client
            .post(format!("{}/send", app.address))
            .bearer_auth(app.default_token())
            .body(valid_message().to_string());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        assert_problem(request.send().await.unwrap(), 415, "unsupported-media-type").await;
    }
    assert_eq!(app.message_count().await, 0);
}

#[tokio::test]
async fn json_with_a_charset_parameter_is_json() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(format!("{}/send", app.address))
        .bearer_auth(app.default_token())
        .header("content-type", "application/json; charset=utf-8")
        .body(valid_message().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
}

#[tokio::test]
async fn unknown_fields_are_refused_by_name() {
    let app = spawn_app().await;
    let mut body = valid_message();
    body["sender"] = json!("x@example.com");
    let problem = assert_problem(app.send(&body).await, 422, "invalid-request").await;
    assert_eq!(problem["field"], "sender");
    assert!(problem["detail"].as_str().unwrap().contains("sender"));

    let mut body = valid_message();
    body["attachments"] = json!([{"filename": "a", "content": "", "mode": "0644"}]);
    let problem = assert_problem(app.send(&body).await, 422, "invalid-request").await;
    assert_eq!(problem["field"], "mode");
}

#[tokio::test]
async fn missing_and_mistyped_fields_are_named() {
    let app = spawn_app().await;
    let mut body = valid_message();
    body.as_object_mut().unwrap().remove("from");
    let problem = assert_problem(app.send(&body).await, 422, "invalid-request").await;
    assert_eq!(problem["field"], "from");

    let mut body = valid_message();
    body["subject"] = json!(42);
    assert_problem(app.send(&body).await, 422, "invalid-request").await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413() {
    let app = spawn_app_with(|c| c.max_body_size = 2048).await;
    let mut body = valid_message();
    body["text"] = json!("x".repeat(4096));
    assert_problem(app.send(&body).await, 413, "payload-too-large").await;

    // Without a Content-Length the limit is enforced while reading the stream.
    let chunks: Vec<Result<String, std::io::Error>> = vec![
        Ok("{\"text\":\"".into()),
        Ok("y".repeat(4096)),
        Ok("\"}".into()),
    ];
    let response = app
        .client
        .post(format!("{}/send", app.address))
        .bearer_auth(app.default_token())
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_problem(response, 413, "payload-too-large").await;
    assert_eq!(app.message_count().await, 0);
}

#[tokio::test]
async fn invalid_addresses_are_refused_with_the_field() {
    let app = spawn_app().await;
    let long_local = format!("{}@example.com", "a".repeat(65));
    let long_domain = format!("a@{}.com", "d".repeat(250));
    let cases: Vec<(&str, Value, &str)> = vec![
        ("from", json!("not an address"), "from"),
        ("from", json!(long_local), "from"),
        ("to", json!(long_domain), "to"),
        ("to", json!(["ok@example.org", "broken@"]), "to[1]"),
        ("cc", json!("a@b@c"), "cc"),
        ("bcc", json!(["<x@example.org"]), "bcc[0]"),
        (
            "reply_to",
            json!("Name <y@example.org> trailing"),
            "reply_to",
        ),
    ];
    for (key, value, field) in cases {
        let mut body = valid_message();
        body[key] = value.clone();
        let problem = assert_problem(app.send(&body).await, 422, "invalid-address").await;
        assert_eq!(problem["field"], field, "{key} = {value}");
    }
    assert_eq!(app.message_count().await, 0);
}

#[tokio::test]
async fn no_cr_or_lf_is_accepted_in_any_header_position() {
    let app = spawn_app().await;
    let injections = [
        "\r\nBcc: victim@example.net",
        "\nBcc: victim@example.net",
        "\rX: y",
        "\0",
    ];
    for injection in injections {
        let mut cases: Vec<(Value, &str)> = Vec::new();
        let mut body = valid_message();
        body["subject"] = json!(format!("Hello{injection}"));
        cases.push((body, "invalid-field"));
        let mut body = valid_message();
        body["from"] = json!(format!("Shop{injection} <shop@example.com>"));
        cases.push((body, "invalid-address"));
        let mut body = valid_message();
        body["to"] = json!(format!("a@example.org{injection}"));
        cases.push((body, "invalid-address"));
        let mut body = valid_message();
        body["reply_to"] = json!([format!("Support{injection} <s@example.com>")]);
        cases.push((body, "invalid-address"));
        let mut body = valid_message();
        body["headers"] = json!({"X-Tag": format!("v{injection}")});
        cases.push((body, "invalid-header"));
        let mut body = valid_message();
        body["headers"] = json!({format!("X-Tag{injection}"): "v"});
        cases.push((body, "invalid-header"));
        let mut body = valid_message();
        body["attachments"] = json!([{"filename": format!("a{injection}.txt"), "content": "aGk="}]);
        cases.push((body, "invalid-attachment"));
        let mut body = valid_message();
        body["attachments"] = json!([{"filename": "a.txt", "content": "aGk=", "content_type": format!("text/plain{injection}")}]);
        cases.push((body, "invalid-attachment"));
        for (body, slug) in cases {
            let response = app.send(&body).await;
            assert_problem(response, 422, slug).await;
        }
    }
    assert_eq!(
        app.message_count().await,
        0,
        "nothing with CR/LF was stored"
    );
}

#[tokio::test]
async fn header_names_with_colons_or_spaces_and_forbidden_headers_are_refused() {
    let app = spawn_app().await;
    for name in ["X-A: b", "X A", "", "X-Ünicode"] {
        let mut body = valid_message();
        body["headers"] = json!({name: "v"});
        assert_problem(app.send(&body).await, 422, "invalid-header").await;
    }
    for name in [
        "Bcc",
        "Received",
        "Return-Path",
        "DKIM-Signature",
        "From",
        "To",
        "Subject",
        "Message-ID",
        "Content-Type",
        "MIME-Version",
        "Date",
        "Sender",
    ] {
        let mut body = valid_message();
        body["headers"] = json!({name: "v"});
        let problem = assert_problem(app.send(&body).await, 422, "forbidden-header").await;
        assert_eq!(problem["field"], "headers");
    }
    let mut body = valid_message();
    body["headers"] = json!({"X-Dup": "1", "x-dup": "2"});
    assert_problem(app.send(&body).await, 422, "invalid-header").await;
}

#[tokio::test]
async fn too_many_recipients_is_refused_per_field() {
    let app = spawn_app_with(|c| c.max_recipients = 3).await;
    let four: Vec<String> = (0..4).map(|i| format!("r{i}@example.org")).collect();
    for field in ["to", "cc", "bcc", "reply_to"] {
        let mut body = valid_message();
        body[field] = json!(four);
        let problem = assert_problem(app.send(&body).await, 422, "too-many-recipients").await;
        assert_eq!(problem["field"], field);
    }
    let mut body = valid_message();
    body["to"] = json!(four[..3]);
    body["cc"] = json!(four[..3]);
    assert_eq!(
        app.send(&body).await.status(),
        202,
        "the limit is per field"
    );
}

#[tokio::test]
async fn the_default_recipient_limit_is_50() {
    let app = spawn_app().await;
    let fifty: Vec<String> = (0..50).map(|i| format!("r{i}@example.org")).collect();
    let mut body = valid_message();
    body["to"] = json!(fifty);
    assert_eq!(app.send(&body).await.status(), 202);
    let mut body = valid_message();
    let fifty_one: Vec<String> = (0..51).map(|i| format!("r{i}@example.org")).collect();
    body["to"] = json!(fifty_one);
    assert_problem(app.send(&body).await, 422, "too-many-recipients").await;
}

#[tokio::test]
async fn a_message_needs_a_recipient_and_a_body() {
    let app = spawn_app().await;
    let mut body = valid_message();
    body.as_object_mut().unwrap().remove("to");
    assert_problem(app.send(&body).await, 422, "no-recipients").await;
    let mut body = valid_message();
    body.as_object_mut().unwrap().remove("text");
    assert_problem(app.send(&body).await, 422, "missing-body").await;
    let mut body = valid_message();
    body["text"] = json!("");
    body["html"] = json!("");
    assert_problem(app.send(&body).await, 422, "missing-body").await;
    let mut body = valid_message();
    body.as_object_mut().unwrap().remove("text");
    body["html"] = json!("<p>only html</p>");
    assert_eq!(app.send(&body).await.status(), 202);
}

#[tokio::test]
async fn attachments_are_checked() {
    let app = spawn_app_with(|c| {
        c.max_attachment_size = 8;
        c.max_attachments = 2;
    })
    .await;
    let attach = |content: &str| json!([{"filename": "a.bin", "content": content}]);
    let mut body = valid_message();
    body["attachments"] = attach("not base64!");
    let problem = assert_problem(app.send(&body).await, 422, "invalid-base64").await;
    assert_eq!(problem["field"], "attachments[0]");
    let mut body = valid_message();
    body["attachments"] = attach("MDEyMzQ1Njc4OQ=="); // ten bytes
    assert_problem(app.send(&body).await, 422, "attachment-too-large").await;
    let mut body = valid_message();
    body["attachments"] = json!([
        {"filename": "a", "content": "aGk="}, {"filename": "b", "content": "aGk="}, {"filename": "c", "content": "aGk="}
    ]);
    assert_problem(app.send(&body).await, 422, "too-many-attachments").await;
    let mut body = valid_message();
    body["attachments"] =
        json!([{"filename": "a.txt", "content": "aGk=", "content_type": "not a type"}]);
    assert_problem(app.send(&body).await, 422, "invalid-attachment").await;
    let mut body = valid_message();
    body["attachments"] = attach("MDEyMzQ1\nNjc=");
    assert_eq!(
        app.send(&body).await.status(),
        202,
        "wrapped base64 of 8 bytes fits"
    );
}

#[tokio::test]
async fn send_at_must_be_a_time_within_the_window() {
    let app = spawn_app().await;
    for bad in [
        json!("tomorrow"),
        json!("2026-13-01T00:00:00Z"),
        json!(1700000000),
        json!("2026-01-01"),
    ] {
        let mut body = valid_message();
        body["send_at"] = bad.clone();
        let response = app.send(&body).await;
        let status = response.status().as_u16();
        let problem: Value = response.json().await.unwrap();
        assert_eq!(status, 422, "{bad}");
        assert!(
            problem["type"] == "urn:posthorn:problem:invalid-send-at"
                || problem["type"] == "urn:posthorn:problem:invalid-request",
            "{bad}: {problem}"
        );
    }
    let mut body = valid_message();
    let far = time::OffsetDateTime::now_utc() + time::Duration::days(400);
    body["send_at"] = json!(
        far.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    );
    assert_problem(app.send(&body).await, 422, "send-at-too-far").await;

    let mut body = valid_message();
    let soon = time::OffsetDateTime::now_utc() + time::Duration::days(7);
    body["send_at"] = json!(
        soon.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    );
    assert_eq!(
        app.send(&body).await.status(),
        202,
        "seven days ahead is within the default window"
    );
}

#[tokio::test]
async fn tags_and_metadata_are_bounded() {
    let app = spawn_app().await;
    let mut body = valid_message();
    body["tags"] = json!(vec!["t"; 21]);
    assert_problem(app.send(&body).await, 422, "invalid-field").await;
    let mut body = valid_message();
    body["tags"] = json!([""]);
    assert_problem(app.send(&body).await, 422, "invalid-field").await;
    let mut body = valid_message();
    body["metadata"] = json!({"k": "v".repeat(1025)});
    assert_problem(app.send(&body).await, 422, "invalid-field").await;
    let mut body = valid_message();
    body["metadata"] = json!({"k": 1});
    assert_problem(app.send(&body).await, 422, "invalid-request").await;
}

#[tokio::test]
async fn nul_characters_and_non_object_bodies_are_refused() {
    let app = spawn_app().await;
    let mut body = valid_message();
    body["metadata"] = json!({"k": "a\u{0}b"});
    let problem = assert_problem(app.send(&body).await, 422, "invalid-field").await;
    assert_eq!(problem["field"], "metadata.k");
    let mut body = valid_message();
    body["tags"] = json!(["a\u{0}b"]);
    assert_problem(app.send(&body).await, 422, "invalid-field").await;
    let positional = json!([
        "a@example.com",
        "b@example.com",
        null,
        null,
        null,
        null,
        "hi"
    ]);
    assert_problem(app.send(&positional).await, 422, "invalid-request").await;
    assert_problem(app.get("/v1/messages?tag=%00").await, 400, "invalid-query").await;
    assert_eq!(app.message_count().await, 0);
}
