//! Rollout (pure core): the plan a spec describes and the state machine that walks it.
