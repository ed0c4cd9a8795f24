//! What happens to a listener's connections, one type per kind of event: each bumps
//! its counter and writes its log line in one place. Warnings are written at most
//! once per [`WarnThrottle::INTERVAL`](crate::telemetry::WarnThrottle) per kind.

use std::sync::atomic::Ordering;

use super::server::ListenerStats;

/// A connection closed at once because the listener was at its limit.
pub(super) struct ConnectionRefused {
    pub max_connections: usize,
}

impl ConnectionRefused {
    pub(super) fn emit(self, stats: &ListenerStats) {
        stats.refused.fetch_add(1, Ordering::Relaxed);
        if let Some(held_back) = stats.refused_warning.admit() {
            tracing::warn!(
                listener = stats.name,
                max_connections = self.max_connections,
                similar_warnings_held_back = held_back,
                "at the connection limit: closing new connections \
                 (counted in spangate_listener_connections_refused_total)"
            );
        }
    }
}

/// Accepting a connection failed, most likely for want of open files.
pub(super) struct AcceptFailed<'a> {
    pub error: &'a std::io::Error,
}

impl AcceptFailed<'_> {
    pub(super) fn emit(self, stats: &ListenerStats) {
        stats.accept_errors.fetch_add(1, Ordering::Relaxed);
        if let Some(held_back) = stats.accept_warning.admit() {
            tracing::warn!(
                listener = stats.name,
                error = %self.error,
                similar_warnings_held_back = held_back,
                "could not accept a connection (counted in spangate_listener_accept_errors_total)"
            );
        }
    }
}

/// A connection closed for sending nothing in time.
pub(super) struct ClosedIdle;

impl ClosedIdle {
    pub(super) fn emit(self, stats: &ListenerStats) {
        stats.closed_idle.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            listener = stats.name,
            "closed a connection that sent nothing in time"
        );
    }
}

/// `TCP_NODELAY` could not be set: answers may wait on Nagle's algorithm. Rare and
/// harmless enough for a debug line without a counter.
pub(super) struct NoDelayFailed<'a> {
    pub error: &'a std::io::Error,
}

impl NoDelayFailed<'_> {
    pub(super) fn emit(self, stats: &ListenerStats) {
        tracing::debug!(
            listener = stats.name,
            error = %self.error,
            "could not set TCP_NODELAY on a connection"
        );
    }
}
