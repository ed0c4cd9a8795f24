//! Rollout (pure core): the plan a spec describes ([`plan`]), the spec compiled with
//! its targeting into what is served ([`CompiledRollout`]), and the state machine
//! that walks the plan ([`decide`]). Time comes in as an argument; no I/O.

mod compiled;
mod machine;
mod plan;

pub use compiled::CompiledRollout;
pub use machine::{Action, Decision, EventType, HISTORY_LIMIT, Input, Request, decide, reject};
pub use plan::{InvalidSpec, Plan, plan};
