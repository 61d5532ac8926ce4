//! Stripe as salestrack reads it: webhook signatures, the typed subset of
//! events that carry sales, and the events API reconciliation pages through.
//! Depends on nothing else in this crate.

pub mod api;
pub mod event;
pub mod signature;
