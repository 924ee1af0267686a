//! Suppressions, webhooks with their deliveries, providers with their circuits, and the queue's last
//! hour.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};

use super::*;
use serde::Serialize;
use time::OffsetDateTime;

use crate::store::SuppressionFilter;

pub(super) async fn suppressions(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<NoticeQuery>,
) -> HttpResponse {
    let Some(session) = session(&req, &state) else {
        return to_login();
    };
    let filter = SuppressionFilter {
        limit: 200,
        ..SuppressionFilter::default()
    };
    match state.store.suppressions(&filter).await {
        Ok(listed) => page(
            &state,
            &session,
            StatusCode::OK,
            "suppressions.html",
            "suppressions",
            minijinja::context! {
                suppressions => super::value(&listed.items),
                notice => notice_text(query.notice.as_deref(), None, None),
            },
        ),
        Err(error) => unavailable(&state, &session, &error),
    }
}

pub(super) async fn remove_suppression(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> HttpResponse {
    let fields = form_fields(&body);
    let session = match actor(
        &req,
        &state,
        &fields,
        Scope::Admin,
        "Changing the suppression list takes an `admin` session.",
    ) {
        Ok(session) => session,
        Err(refused) => return *refused,
    };
    let address = field(&fields, "address").unwrap_or_default();
    match state.store.remove_suppression(address).await {
        Ok(removed) => {
            let notice = if removed { "removed" } else { "absent" };
            see_other(&format!("/console/suppressions?notice={notice}"))
        }
        Err(error) => unavailable(&state, &session, &error),
    }
}

pub(super) async fn webhooks(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let session = match viewer(
        &req,
        &state,
        Scope::Admin,
        "Webhooks take an `admin` session.",
    ) {
        Ok(session) => session,
        Err(refused) => return *refused,
    };
    let endpoints = match state.store.endpoints().await {
        Ok(endpoints) => endpoints,
        Err(error) => return unavailable(&state, &session, &error),
    };
    #[derive(Serialize)]
    struct EndpointView {
        endpoint: crate::store::EndpointRecord,
        deliveries: Vec<crate::store::DeliveryRecord>,
    }
    let mut views = Vec::with_capacity(endpoints.len());
    for endpoint in endpoints {
        let deliveries = match state.store.deliveries(endpoint.id, None, 20).await {
            Ok(deliveries) => deliveries,
            Err(error) => return unavailable(&state, &session, &error),
        };
        views.push(EndpointView {
            endpoint,
            deliveries,
        });
    }
    page(
        &state,
        &session,
        StatusCode::OK,
        "webhooks.html",
        "webhooks",
        minijinja::context! { endpoints => super::value(&views) },
    )
}

pub(super) async fn providers(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let session = match viewer(
        &req,
        &state,
        Scope::Admin,
        "Providers take an `admin` session.",
    ) {
        Ok(session) => session,
        Err(refused) => return *refused,
    };
    let views = crate::api::providers::views(&state);
    page(
        &state,
        &session,
        StatusCode::OK,
        "providers.html",
        "providers",
        minijinja::context! { providers => super::value(&views) },
    )
}

#[derive(Serialize)]
struct Line {
    name: &'static str,
    points: String,
}

#[derive(Serialize)]
pub(super) struct Chart {
    width: u32,
    height: u32,
    samples: usize,
    max: i64,
    lines: Vec<Line>,
}

/// The samples as one polyline per state, scaled to the chart (the newest at the right edge, an
/// hour wide).
pub(super) fn chart(samples: &[crate::queue_history::Sample]) -> Chart {
    const WIDTH: u32 = 720;
    const HEIGHT: u32 = 200;
    let max = samples
        .iter()
        .flat_map(|sample| sample.depth.iter().map(|(_, count)| *count))
        .max()
        .unwrap_or(0)
        .max(1);
    let newest = samples.last().map(|sample| sample.at);
    let lines = ["queued", "scheduled", "sending"]
        .into_iter()
        .map(|name| {
            let points = samples
                .iter()
                .filter_map(|sample| {
                    let age = (newest? - sample.at).as_seconds_f64();
                    let x = f64::from(WIDTH) * (1.0 - age / 3600.0);
                    let count = sample
                        .depth
                        .iter()
                        .find(|(state, _)| *state == name)
                        .map_or(0, |(_, count)| *count);
                    let y = f64::from(HEIGHT) * (1.0 - count as f64 / max as f64);
                    Some(format!("{x:.1},{y:.1}"))
                })
                .collect::<Vec<_>>()
                .join(" ");
            Line { name, points }
        })
        .collect();
    Chart {
        width: WIDTH,
        height: HEIGHT,
        samples: samples.len(),
        max,
        lines,
    }
}

pub(super) async fn queue(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let Some(session) = session(&req, &state) else {
        return to_login();
    };
    let now = match state.store.queue_depth().await {
        Ok(depth) => depth,
        Err(error) => return unavailable(&state, &session, &error),
    };
    // The current depth is the chart's last point even before the first sample.
    let mut samples = state.queue_history.samples();
    samples.push(crate::queue_history::Sample {
        at: OffsetDateTime::now_utc(),
        depth: now.clone(),
    });
    page(
        &state,
        &session,
        StatusCode::OK,
        "queue.html",
        "queue",
        minijinja::context! {
            now => super::value(&now),
            chart => super::value(chart(&samples)),
        },
    )
}
