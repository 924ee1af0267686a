//! Authentication and authorization: every way a token can be wrong, and what scopes allow.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use posthorn::auth::Scope;
use posthorn::config::CallerConfig;
use serde_json::{Value, json};

use crate::support::{
    JWT_SECRET, TestApp, assert_problem, spawn_app, spawn_app_with, valid_message,
};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sign(claims: &Value) -> String {
    sign_with(Header::new(Algorithm::HS256), claims, JWT_SECRET.as_bytes())
}

fn sign_with(header: Header, claims: &Value, secret: &[u8]) -> String {
    encode(&header, claims, &EncodingKey::from_secret(secret)).unwrap()
}

fn claims() -> Value {
    json!({"sub": "tester", "scope": "send read", "exp": now() + 600})
}

async fn assert_unauthenticated(app: &TestApp, token: &str, why: &str) {
    let response = app.send_as(token, &valid_message()).await;
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_problem(response, 401, "unauthenticated").await;
    let challenge = challenge.unwrap_or_else(|| panic!("{why}: no WWW-Authenticate"));
    assert!(
        challenge.starts_with("Bearer realm=\"posthorn\""),
        "{why}: {challenge}"
    );
    assert!(challenge.contains("invalid_token"), "{why}: {challenge}");
}

#[tokio::test]
async fn a_request_without_a_token_is_a_401_with_a_challenge() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(format!("{}/send", app.address))
        .json(&valid_message())
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"posthorn\""
    );
    assert_problem(response, 401, "unauthenticated").await;

    let response = app
        .client
        .get(format!("{}/v1/messages", app.address))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_problem(response, 401, "unauthenticated").await;
    assert_eq!(app.message_count().await, 0);
}

#[tokio::test]
async fn bad_tokens_are_refused() {
    let app = spawn_app().await;
    let mut expired = claims();
    expired["exp"] = json!(now() - 3600);
    let mut no_exp = claims();
    no_exp.as_object_mut().unwrap().remove("exp");
    let mut exp_as_string = claims();
    exp_as_string["exp"] = json!((now() + 600).to_string());
    let mut future_nbf = claims();
    future_nbf["nbf"] = json!(now() + 3600);
    let mut no_sub = claims();
    no_sub.as_object_mut().unwrap().remove("sub");
    let mut sub_not_string = claims();
    sub_not_string["sub"] = json!(12);

    let cases: Vec<(String, &str)> = vec![
        ("garbage".into(), "not a JWT"),
        (sign(&expired), "expired"),
        (sign(&no_exp), "missing exp"),
        (sign(&exp_as_string), "exp of the wrong JSON type"),
        (sign(&future_nbf), "nbf in the future"),
        (sign(&no_sub), "missing sub"),
        (sign(&sub_not_string), "sub not a string"),
        (
            sign_with(
                Header::new(Algorithm::HS256),
                &claims(),
                b"another-secret-another-secret-000000",
            ),
            "wrong key",
        ),
        (
            sign_with(
                Header::new(Algorithm::HS512),
                &claims(),
                JWT_SECRET.as_bytes(),
            ),
            "algorithm not allowed for the key",
        ),
        (alg_none(&claims()), "alg none"),
        (with_kid("../../etc/passwd"), "kid pointing at a path"),
        (
            with_kid("https://evil.example/jwks.json"),
            "kid pointing at a URL",
        ),
    ];
    for (token, why) in cases {
        assert_unauthenticated(&app, &token, why).await;
    }
    assert_eq!(app.message_count().await, 0);
}

fn alg_none(claims: &Value) -> String {
    use base64::Engine;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = engine.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = engine.encode(claims.to_string());
    format!("{header}.{payload}.")
}

fn with_kid(kid: &str) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.into());
    sign_with(header, &claims(), JWT_SECRET.as_bytes())
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_configured() {
    let app = spawn_app_with(|c| {
        c.jwt_issuer = Some("https://auth.example.com".into());
        c.jwt_audience = Some("posthorn".into());
    })
    .await;
    let mut good = claims();
    good["iss"] = json!("https://auth.example.com");
    good["aud"] = json!("posthorn");
    assert_eq!(
        app.send_as(&sign(&good), &valid_message()).await.status(),
        202
    );

    let mut wrong_iss = good.clone();
    wrong_iss["iss"] = json!("https://evil.example");
    assert_unauthenticated(&app, &sign(&wrong_iss), "wrong iss").await;
    let mut wrong_aud = good.clone();
    wrong_aud["aud"] = json!("someone-else");
    assert_unauthenticated(&app, &sign(&wrong_aud), "wrong aud").await;
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("aud");
    assert_unauthenticated(&app, &sign(&missing), "missing aud").await;
    // The operator's own minted tokens carry both.
    assert_eq!(
        app.send_as(&app.default_token(), &valid_message())
            .await
            .status(),
        202
    );
}

#[tokio::test]
async fn scopes_decide_access_with_403_and_a_challenge() {
    let app = spawn_app().await;
    let read_only = app.token("tester", &[Scope::Read]);
    let response = app.send_as(&read_only, &valid_message()).await;
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_problem(response, 403, "insufficient-scope").await;
    assert!(challenge.contains("insufficient_scope") && challenge.contains("scope=\"send\""));

    let send_only = app.token("tester", &[Scope::Send]);
    for path in [
        "/v1/messages",
        "/v1/messages/0192f0c6-0000-7000-8000-000000000000",
    ] {
        let response = app
            .client
            .get(format!("{}{path}", app.address))
            .bearer_auth(&send_only)
            .send()
            .await
            .unwrap();
        assert_problem(response, 403, "insufficient-scope").await;
    }
    let mut array_scope = claims();
    array_scope["scope"] = json!(["send"]);
    assert_eq!(
        app.send_as(&sign(&array_scope), &valid_message())
            .await
            .status(),
        202
    );
    let mut no_scope = claims();
    no_scope.as_object_mut().unwrap().remove("scope");
    assert_problem(
        app.send_as(&sign(&no_scope), &valid_message()).await,
        403,
        "insufficient-scope",
    )
    .await;
}

#[tokio::test]
async fn callers_only_see_their_own_messages_unless_admin() {
    let app = spawn_app().await;
    let alice = app.token("alice", &[Scope::Send, Scope::Read]);
    let bob = app.token("bob", &[Scope::Send, Scope::Read]);
    let admin = app.token("ops", &[Scope::Admin]);
    let response = app.send_as(&alice, &valid_message()).await;
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let get = |token: String, path: String| {
        let client = app.client.clone();
        let url = format!("{}{path}", app.address);
        async move { client.get(url).bearer_auth(token).send().await.unwrap() }
    };
    assert_eq!(
        get(alice.clone(), format!("/v1/messages/{id}"))
            .await
            .status(),
        200
    );
    assert_problem(
        get(bob.clone(), format!("/v1/messages/{id}")).await,
        404,
        "not-found",
    )
    .await;
    assert_eq!(
        get(admin.clone(), format!("/v1/messages/{id}"))
            .await
            .status(),
        200
    );
    let bobs: Value = get(bob, "/v1/messages".into()).await.json().await.unwrap();
    assert_eq!(bobs["items"], json!([]));
    let all: Value = get(admin, "/v1/messages".into())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(all["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn callers_can_be_restricted_to_sender_domains() {
    let app = spawn_app_with(|c| {
        c.callers = vec![CallerConfig {
            sub: "shop".into(),
            sender_domains: vec!["example.com".into()],
            ..CallerConfig::default()
        }];
    })
    .await;
    let shop = app.token("shop", &[Scope::Send]);
    assert_eq!(app.send_as(&shop, &valid_message()).await.status(), 202);
    let mut body = valid_message();
    body["from"] = json!("ceo@other.example");
    let response = app
        .client
        .post(format!("{}/send", app.address))
        .bearer_auth(&shop)
        .json(&body)
        .send()
        .await
        .unwrap();
    let problem = assert_problem(response, 403, "sender-not-allowed").await;
    assert_eq!(problem["field"], "from");

    // A token can narrow its own domains too.
    let mut narrowed = claims();
    narrowed["sender_domains"] = json!(["mail.example.net"]);
    let response = app.send_as(&sign(&narrowed), &valid_message()).await;
    assert_problem(response, 403, "sender-not-allowed").await;
}

#[tokio::test]
async fn a_disabled_caller_is_refused_even_with_a_valid_token() {
    let app = spawn_app_with(|c| {
        c.callers = vec![CallerConfig {
            sub: "revoked".into(),
            disabled: true,
            ..CallerConfig::default()
        }];
    })
    .await;
    let token = app.token("revoked", &[Scope::Send]);
    assert_unauthenticated(&app, &token, "disabled caller").await;
}

#[tokio::test]
async fn keys_with_a_kid_are_selected_by_it() {
    let second = "second-key-0123456789-0123456789-xyz";
    let app = spawn_app_with(|c| {
        c.jwt_keys = vec![posthorn::auth::KeySpec {
            kid: Some("k2".into()),
            algorithm: "HS256".into(),
            secret: Some(posthorn::secret::Secret::new(second)),
            public_key_pem: None,
        }];
    })
    .await;
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k2".into());
    assert_eq!(
        app.send_as(
            &sign_with(header.clone(), &claims(), second.as_bytes()),
            &valid_message()
        )
        .await
        .status(),
        202
    );
    // The right kid with the other key's signature does not verify.
    assert_unauthenticated(
        &app,
        &sign_with(header, &claims(), JWT_SECRET.as_bytes()),
        "kid/key mismatch",
    )
    .await;
}

#[tokio::test]
async fn an_rs256_public_key_verifies_and_hs_rs_confusion_fails() {
    // A fixed 2048-bit test key pair.
    let private_pem = include_str!("fixtures/rsa-private.pem");
    let public_pem = include_str!("fixtures/rsa-public.pem");
    let app = spawn_app_with(|c| {
        c.jwt_keys = vec![posthorn::auth::KeySpec {
            kid: Some("rsa".into()),
            algorithm: "RS256".into(),
            secret: None,
            public_key_pem: Some(public_pem.into()),
        }];
    })
    .await;
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa".into());
    let token = encode(
        &header,
        &claims(),
        &EncodingKey::from_rsa_pem(private_pem.as_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(app.send_as(&token, &valid_message()).await.status(), 202);

    // HS256 signed with the public key's bytes: the classic confusion attack.
    let mut confused = Header::new(Algorithm::HS256);
    confused.kid = Some("rsa".into());
    let forged = sign_with(confused, &claims(), public_pem.as_bytes());
    assert_unauthenticated(&app, &forged, "HS/RS confusion").await;
}
