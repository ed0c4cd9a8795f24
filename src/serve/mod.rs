//! Serve (shell): flag values over OFREP, health and readiness probes.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::flags::FlagSet;

/// The flag set currently served; the controller swaps in a new one on every change.
pub type PublishedFlags = Arc<ArcSwap<FlagSet>>;
