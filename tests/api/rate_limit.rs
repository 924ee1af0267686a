//! Per-caller rate limits: a token bucket per caller, 429 with Retry-After and RateLimit-* headers.

use std::time::Duration;

use posthorn::auth::Scope;
use posthorn::config::CallerConfig;

use crate::support::{assert_problem, spawn_app_with, valid_message};

#[tokio::test]
async fn a_caller_over_its_quota_gets_429_with_retry_after_and_ratelimit_headers() {
    let app = spawn_app_with(|config| {
        config.rate_limit = 2.0;
        config.rate_limit_burst = 3;
    })
    .await;
    let alice = app.token("alice", &[Scope::Send, Scope::Read]);
    for _ in 0..3 {
        assert_eq!(app.send_as(&alice, &valid_message()).await.status(), 202);
    }
    let refused = app.send_as(&alice, &valid_message()).await;
    let header = |name: &str| {
        refused
            .headers()
            .get(name)
            .unwrap_or_else(|| panic!("{name} is missing"))
            .to_str()
            .unwrap()
            .to_owned()
    };
    let retry_after: u64 = header("retry-after").parse().unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(header("ratelimit-limit"), "3");
    assert_eq!(header("ratelimit-remaining"), "0");
    assert!(header("ratelimit-reset").parse::<u64>().unwrap() >= 1);
    assert_problem(refused, 429, "rate-limited").await;

    // Another caller has its own bucket; bad tokens do not drain anyone's.
    let bob = app.token("bob", &[Scope::Send]);
    assert_eq!(app.send_as(&bob, &valid_message()).await.status(), 202);
    for _ in 0..5 {
        assert_eq!(
            app.send_as("not-a-token", &valid_message()).await.status(),
            401
        );
    }
    // The bucket refills at the rate: half a second gives alice one more request.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(app.send_as(&alice, &valid_message()).await.status(), 202);
    assert_eq!(app.send_as(&alice, &valid_message()).await.status(), 429);
    assert_eq!(
        app.message_count().await,
        0,
        "the default caller sent nothing"
    );
    assert_eq!(app.metric("posthorn_rate_limited_total", "").await, 2.0);
}

#[tokio::test]
async fn quotas_can_be_set_per_caller_and_turned_off() {
    let app = spawn_app_with(|config| {
        config.rate_limit = 1.0;
        config.rate_limit_burst = 1;
        config.callers = vec![CallerConfig {
            sub: "bulk".into(),
            rate_limit: Some(0.0),
            ..CallerConfig::default()
        }];
    })
    .await;
    let bulk = app.token("bulk", &[Scope::Send]);
    for _ in 0..20 {
        assert_eq!(
            app.send_as(&bulk, &valid_message()).await.status(),
            202,
            "0 means unlimited"
        );
    }
    let other = app.token("other", &[Scope::Send]);
    assert_eq!(app.send_as(&other, &valid_message()).await.status(), 202);
    assert_eq!(app.send_as(&other, &valid_message()).await.status(), 429);
}
