//! `POST /v1/send/batch`: one transaction, answers in request order, strict and permissive modes,
//! the batch's key and each item's own key, limits, and dry runs.

use posthorn::auth::Scope;
use posthorn::config::CallerConfig;
use serde_json::{Value, json};

use crate::support::{TestApp, assert_problem, spawn_app, spawn_app_with, valid_message};

/// `POST /v1/send/batch?query` with `body` and `token`.
async fn batch_as(app: &TestApp, token: &str, query: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(format!("{}/v1/send/batch{query}", app.address))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn batch(app: &TestApp, query: &str, body: &Value) -> reqwest::Response {
    batch_as(app, &app.default_token(), query, body).await
}

fn message(subject: &str) -> Value {
    let mut message = valid_message();
    message["subject"] = json!(subject);
    message
}

fn ids(body: &Value) -> Vec<String> {
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["id"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[tokio::test]
async fn a_batch_is_queued_in_one_piece_and_answered_in_request_order() {
    let app = spawn_app().await;
    let response = batch(
        &app,
        "",
        &json!([message("first"), message("second"), message("third")]),
    )
    .await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    let ids = ids(&body);
    assert_eq!(ids.len(), 3);
    for (id, subject) in ids.iter().zip(["first", "second", "third"]) {
        let stored = app.message(id).await;
        assert_eq!(stored["subject"], subject);
        assert_eq!(stored["status"], "queued");
        assert_eq!(stored["source"], "api");
    }
    assert_eq!(app.message_count().await, 3);
    assert_eq!(
        app.metric("posthorn_messages_accepted_total", "").await,
        3.0
    );
}

#[tokio::test]
async fn strict_mode_names_every_failing_item_and_queues_nothing() {
    let app = spawn_app().await;
    let mut no_recipient = message("b");
    no_recipient["to"] = Value::Null;
    let mut bad_address = message("d");
    bad_address["to"] = json!("not an address");
    let mut unknown_field = message("e");
    unknown_field["colour"] = json!("blue");
    let response = batch(
        &app,
        "?mode=strict",
        &json!([
            message("a"),
            no_recipient,
            message("c"),
            bad_address,
            unknown_field
        ]),
    )
    .await;
    let problem = assert_problem(response, 422, "invalid-batch").await;
    let errors = problem["errors"].as_array().unwrap();
    let indexes: Vec<u64> = errors
        .iter()
        .map(|e| e["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, [1, 3, 4]);
    assert_eq!(errors[0]["type"], "urn:posthorn:problem:no-recipients");
    assert_eq!(errors[1]["type"], "urn:posthorn:problem:invalid-address");
    assert_eq!(errors[1]["field"], "to");
    assert_eq!(errors[2]["type"], "urn:posthorn:problem:invalid-request");
    assert_eq!(errors[2]["field"], "colour");
    assert!(errors.iter().all(|e| e["detail"].as_str().is_some()));
    assert_eq!(
        app.message_count().await,
        0,
        "nothing of a refused batch is queued"
    );
}

#[tokio::test]
async fn permissive_mode_queues_the_valid_items_and_answers_each_in_its_place() {
    let app = spawn_app().await;
    let mut bad = message("bad");
    bad["text"] = Value::Null;
    let response = batch(&app, "?mode=permissive", &json!([message("good"), bad])).await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    let id = data[0]["id"].as_str().unwrap();
    assert_eq!(app.message(id).await["subject"], "good");
    assert_eq!(
        data[1]["error"]["type"],
        "urn:posthorn:problem:missing-body"
    );
    assert_eq!(data[1]["error"]["status"], 422);
    assert!(data[1].get("id").is_none());
    assert_eq!(app.message_count().await, 1);

    // Every item refused: still 202 and the same shape.
    let mut worse = message("worse");
    worse["from"] = json!("nobody");
    let response = batch(&app, "?mode=permissive", &json!([worse])).await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["data"][0]["error"]["type"],
        "urn:posthorn:problem:invalid-address"
    );
}

#[tokio::test]
async fn the_batch_limits_and_shapes_are_enforced() {
    let app = spawn_app_with(|config| config.max_batch = 3).await;
    let four = json!([message("1"), message("2"), message("3"), message("4")]);
    let problem = assert_problem(batch(&app, "", &four).await, 422, "batch-too-large").await;
    assert!(problem["detail"].as_str().unwrap().contains("at most 3"));
    assert_problem(batch(&app, "", &json!([])).await, 422, "empty-batch").await;
    assert_problem(batch(&app, "", &message("x")).await, 422, "invalid-request").await;
    assert_problem(
        batch(&app, "?mode=loose", &json!([message("x")])).await,
        400,
        "invalid-query",
    )
    .await;
    let malformed = app
        .client
        .post(format!("{}/v1/send/batch", app.address))
        .bearer_auth(app.default_token())
        .header("content-type", "application/json")
        .body("[{\"from\": ")
        .send()
        .await
        .unwrap();
    assert_problem(malformed, 400, "malformed-json").await;
    // A key given twice inside one item is that item's error.
    let repeated = app
        .client
        .post(format!("{}/v1/send/batch?mode=permissive", app.address))
        .bearer_auth(app.default_token())
        .header("content-type", "application/json")
        .body(r#"[{"from": "a@example.com", "from": "b@example.com", "to": "c@example.org", "text": "x"}]"#)
        .send()
        .await
        .unwrap();
    let body: Value = repeated.json().await.unwrap();
    assert_eq!(body["data"][0]["error"]["field"], "from", "{body}");
    let reader = app.token("reader", &[Scope::Read]);
    assert_problem(
        batch_as(&app, &reader, "", &json!([message("x")])).await,
        403,
        "insufficient-scope",
    )
    .await;
    assert_eq!(app.message_count().await, 0);
}

#[tokio::test]
async fn the_whole_request_counts_against_the_body_limit() {
    let app = spawn_app_with(|config| config.max_body_size = 2048).await;
    let mut big = message("big");
    big["text"] = json!("x".repeat(700));
    let response = batch(&app, "", &json!([big.clone(), big.clone(), big])).await;
    assert_problem(response, 413, "payload-too-large").await;
}

#[tokio::test]
async fn the_batch_key_replays_the_first_answer_and_refuses_another_request() {
    let app = spawn_app().await;
    let body = json!([message("one"), message("two")]);
    let send = |body: Value| {
        let app = &app;
        async move {
            app.client
                .post(format!("{}/v1/send/batch", app.address))
                .bearer_auth(app.default_token())
                .header("Idempotency-Key", "batch-7")
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let first = send(body.clone()).await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let again = send(body.clone()).await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(ids(&first), ids(&again));
    assert_eq!(app.message_count().await, 2);

    let other = send(json!([message("one")])).await;
    assert_problem(other, 422, "idempotency-key-reused").await;
    // The same key on a single send is another request too.
    let single = app
        .send_with(&message("one"), |r| r.header("Idempotency-Key", "batch-7"))
        .await;
    assert_problem(single, 422, "idempotency-key-reused").await;
    assert_eq!(app.message_count().await, 2);
}

#[tokio::test]
async fn a_permissive_replay_answers_the_refused_items_again() {
    let app = spawn_app().await;
    let mut bad = message("bad");
    bad["to"] = json!("nope");
    let body = json!([bad, message("good")]);
    let send = || async {
        app.client
            .post(format!("{}/v1/send/batch?mode=permissive", app.address))
            .bearer_auth(app.default_token())
            .header("Idempotency-Key", "mixed")
            .json(&body)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let first = send().await;
    let again = send().await;
    assert_eq!(first, again);
    assert_eq!(
        again["data"][0]["error"]["type"],
        "urn:posthorn:problem:invalid-address"
    );
    assert_eq!(app.message_count().await, 1);
}

#[tokio::test]
async fn an_item_s_own_key_deduplicates_it_against_earlier_sends() {
    let app = spawn_app().await;
    let mut keyed = message("welcome");
    keyed["idempotency_key"] = json!("welcome-42");
    // The same message, with its key in the body, sent alone first.
    let single = app.accept(&keyed).await;
    let response = batch(&app, "", &json!([keyed.clone(), message("other")])).await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        ids(&body)[0],
        single,
        "the keyed item answers with the earlier message"
    );
    assert_eq!(app.message_count().await, 2);

    // Strict: an item whose key was used for another message refuses the batch.
    let mut reused = message("something else");
    reused["idempotency_key"] = json!("welcome-42");
    let response = batch(&app, "", &json!([message("fresh"), reused.clone()])).await;
    let problem = assert_problem(response, 422, "invalid-batch").await;
    assert_eq!(problem["errors"][0]["index"], 1);
    assert_eq!(
        problem["errors"][0]["type"],
        "urn:posthorn:problem:idempotency-key-reused"
    );
    assert_eq!(app.message_count().await, 2, "nothing of the refused batch");

    // Permissive: that item alone is refused.
    let response = batch(&app, "?mode=permissive", &json!([message("fresh"), reused])).await;
    let body: Value = response.json().await.unwrap();
    assert!(body["data"][0]["id"].is_string());
    assert_eq!(
        body["data"][1]["error"]["type"],
        "urn:posthorn:problem:idempotency-key-reused"
    );
    assert_eq!(app.message_count().await, 3);

    // Two items with one key in one batch: the second answers with the first's message.
    let mut twin = message("twin");
    twin["idempotency_key"] = json!("twin");
    let response = batch(&app, "", &json!([twin.clone(), twin])).await;
    let body: Value = response.json().await.unwrap();
    let twins = ids(&body);
    assert_eq!(twins[0], twins[1]);

    let mut bad_key = message("x");
    bad_key["idempotency_key"] = json!("");
    let problem = assert_problem(
        batch(&app, "", &json!([bad_key])).await,
        422,
        "invalid-batch",
    )
    .await;
    assert_eq!(problem["errors"][0]["field"], "idempotency_key");
}

#[tokio::test]
async fn a_caller_s_sender_domains_hold_for_every_item() {
    let app = spawn_app_with(|config| {
        config.callers = vec![CallerConfig {
            sub: "shop".into(),
            sender_domains: vec!["example.com".into()],
            ..CallerConfig::default()
        }];
    })
    .await;
    let shop = app.token("shop", &[Scope::Send, Scope::Read]);
    let mut foreign = message("foreign");
    foreign["from"] = json!("ceo@other.example");
    let response = batch_as(&app, &shop, "", &json!([message("ok"), foreign.clone()])).await;
    let problem = assert_problem(response, 422, "invalid-batch").await;
    assert_eq!(problem["errors"][0]["index"], 1);
    assert_eq!(
        problem["errors"][0]["type"],
        "urn:posthorn:problem:sender-not-allowed"
    );
    let response = batch_as(
        &app,
        &shop,
        "?mode=permissive",
        &json!([message("ok"), foreign]),
    )
    .await;
    let body: Value = response.json().await.unwrap();
    assert!(body["data"][0]["id"].is_string());
    assert_eq!(body["data"][1]["error"]["status"], 403);
}

#[tokio::test]
async fn a_dry_run_batch_shows_each_message_and_stores_nothing() {
    let app = spawn_app().await;
    let response = batch(
        &app,
        "?dry_run=true",
        &json!([message("first"), message("second")]),
    )
    .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert!(
        data[1]["mime"]
            .as_str()
            .unwrap()
            .contains("Subject: second")
    );
    assert_eq!(
        data[0]["envelope"]["rcpt_to"],
        json!(["customer@example.org"])
    );
    assert_eq!(data[0]["dry_run"], true);
    // Every item refused, permissive: still a dry run's 200.
    let mut bad = message("bad");
    bad["to"] = json!("nope");
    let response = batch(&app, "?dry_run=true&mode=permissive", &json!([bad])).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["data"][0]["error"]["type"],
        "urn:posthorn:problem:invalid-address"
    );
    assert_eq!(app.message_count().await, 0);
}
