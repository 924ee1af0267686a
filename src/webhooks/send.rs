//! One delivery: the body, its Standard Webhooks signature, the POST, and what the answer means.

use std::time::{Duration, Instant};

use rand::Rng;
use serde::Serialize;
use standardwebhooks::Webhook;
use time::OffsetDateTime;

use super::WebhookSettings;
use crate::metrics::Metrics;
use crate::store::{ClaimedDelivery, DeliveryAttempt, DeliveryResult, SharedStore};

/// The longest wait a `Retry-After` can ask for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Most bytes of an endpoint's answer kept in the attempt's error.
const KEPT_ANSWER: usize = 200;

/// The HTTP client of every delivery: no redirects followed, the guard's resolver, the deadline.
pub(super) fn client(settings: &WebhookSettings) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(settings.guard.resolver())
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout)
        .user_agent(concat!("posthorn-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// A delivery's body.
#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    data: &'a serde_json::Value,
}

/// The `webhook-signature` header: a `v1,` signature with each secret, separated by spaces.
pub(super) fn signature(
    secrets: &[String],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, String> {
    let mut signatures = Vec::with_capacity(secrets.len());
    for secret in secrets {
        let webhook = Webhook::new(secret).map_err(|error| error.to_string())?;
        signatures.push(
            webhook
                .sign(id, timestamp, body)
                .map_err(|error| error.to_string())?,
        );
    }
    Ok(signatures.join(" "))
}

/// Sends a delivery and records the attempt.
pub(super) async fn deliver(
    store: &SharedStore,
    settings: &WebhookSettings,
    metrics: &Metrics,
    client: &reqwest::Client,
    delivery: ClaimedDelivery,
) {
    let started_at = OffsetDateTime::now_utc();
    let clock = Instant::now();
    let (status_code, error, retry_after) = post(settings, client, &delivery).await;
    let latency_ms = u32::try_from(clock.elapsed().as_millis()).unwrap_or(u32::MAX);
    let result = match status_code {
        Some(code) if (200..300).contains(&code) => DeliveryResult::Succeeded,
        Some(410) => DeliveryResult::Gone,
        _ => match next_delay(settings, delivery.attempt, retry_after) {
            Some(delay) => DeliveryResult::Retry(delay),
            None => DeliveryResult::Failed,
        },
    };
    let outcome = if result == DeliveryResult::Succeeded {
        "succeeded"
    } else {
        "failed"
    };
    metrics
        .webhook_deliveries
        .with_label_values(&[outcome])
        .inc();
    match result {
        DeliveryResult::Succeeded => {}
        DeliveryResult::Gone => tracing::warn!(
            endpoint = %delivery.endpoint_id,
            "the webhook endpoint answered 410 Gone: it is disabled"
        ),
        _ => tracing::info!(
            endpoint = %delivery.endpoint_id,
            attempt = delivery.attempt,
            status = status_code,
            error = error.as_deref(),
            will_retry = matches!(result, DeliveryResult::Retry(_)),
            "webhook delivery failed"
        ),
    }
    let attempt = DeliveryAttempt {
        attempt: delivery.attempt,
        started_at,
        status_code,
        latency_ms,
        error,
    };
    let mut backoff = Duration::from_millis(100);
    for _ in 0..6 {
        match store
            .record_delivery(&delivery, &attempt, result, settings.disable_after)
            .await
        {
            Ok(_) => return,
            Err(error) => {
                tracing::warn!(error = %crate::telemetry::error_chain(&error), "recording a webhook delivery failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
    }
}

/// Posts the delivery: the answer's status, what went wrong, and a `Retry-After`.
async fn post(
    settings: &WebhookSettings,
    client: &reqwest::Client,
    delivery: &ClaimedDelivery,
) -> (Option<u16>, Option<String>, Option<Duration>) {
    // An address in the URL itself never goes through the resolver: it is checked here.
    if let Err(error) = settings.guard.check_form(&delivery.url) {
        return (None, Some(error.to_string()), None);
    }
    let event = &delivery.event;
    let body = match serde_json::to_vec(&Body {
        kind: event.kind.as_str(),
        created_at: event.created_at,
        data: &event.data,
    }) {
        Ok(body) => body,
        Err(error) => return (None, Some(error.to_string()), None),
    };
    let timestamp = OffsetDateTime::now_utc().unix_timestamp();
    let signature = match signature(&delivery.secrets, &event.id, timestamp, &body) {
        Ok(signature) => signature,
        Err(error) => return (None, Some(format!("signing failed: {error}")), None),
    };
    let response = client
        .post(&delivery.url)
        .header("content-type", "application/json")
        .header("webhook-id", &event.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await;
    match response {
        Ok(response) => {
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(retry_after);
            let error = if response.status().is_success() {
                None
            } else {
                let text = response.text().await.unwrap_or_default();
                let kept: String = text.chars().take(KEPT_ANSWER).collect();
                Some(format!("HTTP {status}: {kept}").trim_end().to_owned())
            };
            (Some(status), error, retry_after)
        }
        Err(error) => (None, Some(describe(&error)), None),
    }
}

/// What went wrong, in words an operator can act on.
fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "could not connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(value: &str) -> Option<Duration> {
    if let Ok(seconds) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER));
    }
    let at = httpdate(value)?;
    let wait = at - OffsetDateTime::now_utc();
    Some(
        Duration::try_from(wait)
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_AFTER),
    )
}

/// An RFC 9110 HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn httpdate(value: &str) -> Option<OffsetDateTime> {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::PrimitiveDateTime::parse(value.trim(), format)
        .ok()
        .map(|at| at.assume_utc())
}

/// The wait before the next attempt after attempt `attempt` failed: the schedule's (±20 %), or longer
/// if the endpoint asked; `None` once the schedule is spent.
fn next_delay(
    settings: &WebhookSettings,
    attempt: i32,
    retry_after: Option<Duration>,
) -> Option<Duration> {
    let index = usize::try_from(attempt).ok()?.checked_sub(1)?;
    let scheduled = *settings.schedule.get(index)?;
    let jittered = scheduled.mul_f64(rand::rng().random_range(0.8..=1.2));
    Some(retry_after.map_or(jittered, |asked| asked.max(jittered)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(retry_after("999999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon"), None);
    }

    #[test]
    fn the_schedule_runs_out() {
        let settings = WebhookSettings {
            schedule: vec![Duration::from_secs(10), Duration::from_secs(100)],
            ..WebhookSettings::default()
        };
        let first = next_delay(&settings, 1, None).unwrap();
        assert!(first >= Duration::from_secs(8) && first <= Duration::from_secs(12));
        let asked = next_delay(&settings, 1, Some(Duration::from_secs(60))).unwrap();
        assert_eq!(asked, Duration::from_secs(60));
        assert!(next_delay(&settings, 3, None).is_none());
    }

    #[test]
    fn signatures_verify_with_the_standard_library() {
        let secret = super::super::new_secret();
        let header =
            signature(std::slice::from_ref(&secret), "evt_1", 1_700_000_000, b"{}").unwrap();
        let expected = Webhook::new(&secret)
            .unwrap()
            .sign("evt_1", 1_700_000_000, b"{}")
            .unwrap();
        assert_eq!(header, expected);
        let two = signature(
            &[secret.clone(), super::super::new_secret()],
            "evt_1",
            1,
            b"{}",
        )
        .unwrap();
        assert_eq!(two.split(' ').count(), 2);
    }
}
