//! Which rollout a span sample counts for.

/// Placeholder until the ingest branch lands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub rollout: String,
    pub service: String,
    pub flag_key: String,
    pub revision: Option<String>,
    pub baseline_variant: String,
    pub candidate_variant: String,
    pub epoch: u64,
}

/// Placeholder until the ingest branch lands.
#[derive(Debug, Clone, Default)]
pub struct Routes;
