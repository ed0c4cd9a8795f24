//! The operator's own logs and traces.
