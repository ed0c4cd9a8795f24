//! Which rollout a span sample counts for.

/// Being written.
#[derive(Debug, Clone, Default)]
pub struct Routes;
/// Being written.
#[derive(Debug, Clone)]
pub struct Route;
