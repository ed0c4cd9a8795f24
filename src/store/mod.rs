//! Store (shell): where rollouts and their status are read and written.
