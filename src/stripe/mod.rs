//! Stripe as salestrack reads it: webhook signatures and the typed subset of
//! events that carry sales. Depends on nothing else in this crate.

pub mod event;
pub mod signature;
