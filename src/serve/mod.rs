//! Serve (shell): flag values over OFREP, health and readiness probes, metrics.
//!
//! [`ofrep_router`] answers OFREP v0.3 evaluations from the flag set the controller
//! publishes; [`health_router`] answers `/healthz` and `/readyz`. They are separate
//! routers so that in a cluster the probes can sit with metrics on their own port,
//! away from the port applications reach; standalone mode, where everything is on
//! loopback, may mount both on the OFREP port (127.0.0.1:8016) with [`router`].
//! [`crate::net::serve`] runs any of them on a listener, under limits, until shutdown.

mod access;
mod health;
mod metrics;
mod ofrep;

use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::Router;

use crate::flags::FlagSet;

pub use access::Access;
pub use health::{Readiness, health_router};
pub use metrics::metrics_router;
pub use ofrep::{MAX_BODY_BYTES, MAX_CONTEXT_DEPTH, OfrepConfig, OfrepStats, ofrep_router};

/// The flag set currently served; the controller swaps in a new one on every change.
pub type PublishedFlags = Arc<ArcSwap<FlagSet>>;

/// OFREP and the probes on one port.
pub fn router(flags: PublishedFlags, config: OfrepConfig, readiness: Readiness) -> Router {
    ofrep_router(flags, config).merge(health_router(readiness))
}
