//! Background jobs. Each has a `run_once()` that tests drive directly.

pub mod reconcile;
pub mod sweep;
