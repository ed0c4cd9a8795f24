//! Rollout (pure core): the plan a spec describes ([`plan`]) and the state machine
//! that walks it ([`decide`]). Time comes in as an argument; no I/O.

mod machine;
mod plan;

pub use machine::{Action, Decision, EventType, HISTORY_LIMIT, Input, Request, decide, reject};
pub use plan::{InvalidSpec, Plan, plan};
