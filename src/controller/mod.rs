//! Controller (shell): reconciles each rollout on change and on a tick.
