//! An upstream that refuses connections, then comes back.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use posthorn::secret::Secret;
use serde_json::Value;
use time::OffsetDateTime;

use super::{copies, rfc3339};
use crate::support::peers::free_port;
use crate::support::smtp::{Script, SmtpServer};
use crate::support::{fast_delivery, spawn_app_with, valid_message};

#[tokio::test]
async fn an_upstream_refusing_connections_is_retried_with_growing_delays_then_delivered() {
    // Nothing listens here until the end of the test.
    let port = free_port();
    let initial = Duration::from_millis(400);
    let app = spawn_app_with(|config| {
        fast_delivery(config);
        config.smtp_url = Some(Secret::new(format!("smtp://127.0.0.1:{port}")));
        config.poll_interval = Duration::from_millis(50);
        config.retry_initial_delay = initial;
        config.retry_max_delay = Duration::from_secs(60);
        config.retry_max_attempts = 20;
    })
    .await;
    let id = app.accept(&valid_message()).await;

    // After attempt n fails, the message is queued with next_attempt_at = end of attempt + delay n.
    const OBSERVED: i64 = 4;
    let mut delays: BTreeMap<i64, f64> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut message = Value::Null;
    while (delays.len() as i64) < OBSERVED {
        assert!(
            Instant::now() < deadline,
            "retries observed: {delays:?}\n{message:#}"
        );
        message = app.message(&id).await;
        let attempts = message["attempts"].as_array().cloned().unwrap_or_default();
        if message["status"] == "queued"
            && let Some(last) = attempts.last()
            && message["next_attempt_at"].is_string()
            && message["attempt_count"] == last["attempt"]
        {
            let attempt = last["attempt"].as_i64().unwrap();
            let ended = rfc3339(&last["started_at"])
                + time::Duration::milliseconds(last["duration_ms"].as_i64().unwrap());
            let delay = (rfc3339(&message["next_attempt_at"]) - ended).as_seconds_f64();
            delays.entry(attempt).or_insert(delay);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let attempts = message["attempts"].as_array().unwrap().clone();
    eprintln!("retry delays after each refused connection (s): {delays:?}");
    for attempt in &attempts {
        assert_eq!(attempt["outcome"], "transient", "{attempt}");
        assert_eq!(attempt["smtp_code"], Value::Null, "{attempt}");
        assert!(
            attempt["response"].as_str().is_some_and(|r| !r.is_empty()),
            "the refusal is described: {attempt}"
        );
    }
    for (attempt, delay) in &delays {
        let expected = initial.as_secs_f64() * 2f64.powi(*attempt as i32 - 1);
        // ±20 % jitter; the recorded end of an attempt precedes the scheduling by a few milliseconds.
        assert!(
            *delay >= expected * 0.8 - 0.02 && *delay <= expected * 1.2 + 0.2,
            "delay after attempt {attempt}: {delay:.3}s, expected {expected:.3}s ±20 %"
        );
    }
    // The gaps between attempt starts grow.
    let starts: Vec<OffsetDateTime> = attempts.iter().map(|a| rfc3339(&a["started_at"])).collect();
    let gaps: Vec<f64> = starts
        .windows(2)
        .map(|pair| (pair[1] - pair[0]).as_seconds_f64())
        .collect();
    eprintln!("gaps between attempt starts (s): {gaps:?}");
    assert!(
        gaps.windows(2).all(|pair| pair[1] > pair[0]),
        "gaps grow: {gaps:?}"
    );

    // The upstream comes back on the same port.
    let smtp = SmtpServer::start_on(port, Script::default()).await;
    let message = app
        .wait_for_status(&id, "sent", Duration::from_secs(20))
        .await;
    assert_eq!(copies(&smtp, message["message_id"].as_str().unwrap()), 1);
    let attempts = message["attempts"].as_array().unwrap();
    assert_eq!(attempts.last().unwrap()["outcome"], "sent");
    assert!(attempts.len() as i64 > OBSERVED);
}
