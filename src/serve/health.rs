//! Liveness and readiness probes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

/// Whether the operator is ready for traffic. Clones share one flag: the controller
/// keeps one and sets it, the `/readyz` handler reads another.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Not ready yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Called by the controller after its first reconcile, once flags are published.
    pub fn set_ready(&self) {
        // Release pairs with the Acquire in `is_ready`: whoever sees ready also sees
        // what was published before it.
        self.0.store(true, Ordering::Release);
    }

    /// Called when the controller can no longer reconcile (its rollouts cannot be
    /// listed): `/readyz` says so until a pass succeeds again.
    pub fn set_not_ready(&self) {
        self.0.store(false, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// `GET /healthz` (200 while the process serves) and `GET /readyz` (200 once
/// [`Readiness::set_ready`] was called, 503 before).
pub fn health_router(readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(readiness)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(readiness): State<Readiness>) -> (StatusCode, &'static str) {
    if readiness.is_ready() {
        (StatusCode::OK, "ok\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the first reconcile has not finished\n",
        )
    }
}
