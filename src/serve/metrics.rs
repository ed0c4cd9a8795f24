//! `GET /metrics`: every registered family, encoded on each scrape in the format
//! the scraper asks for (see [`crate::telemetry::metrics::exposition`]).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::telemetry::metrics::{Registry, exposition};

/// `GET /metrics`, answered from `registry`.
pub fn metrics_router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(registry)
}

async fn metrics(State(registry): State<Arc<Registry>>, headers: HeaderMap) -> impl IntoResponse {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let (content_type, text) = exposition(&registry, accept);
    ([(header::CONTENT_TYPE, content_type)], text)
}
