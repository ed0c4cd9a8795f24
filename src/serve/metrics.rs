//! `GET /metrics`: the Prometheus text exposition, rendered on every scrape.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

/// Renders the exposition; called once per scrape.
pub type RenderMetrics = Arc<dyn Fn() -> String + Send + Sync>;

/// `GET /metrics`, answered by `render`.
pub fn metrics_router(render: RenderMetrics) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(render)
}

async fn metrics(State(render): State<RenderMetrics>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(),
    )
}
