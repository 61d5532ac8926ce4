//! salestrack: self-hosted sales attribution for link-based marketing on Stripe.
//!
//! `http` (the edge) → `domain` (the rules) → `storage` (the `Store` trait).
//! `stripe` reads signatures and events and depends on nothing else here.

pub mod app;
pub mod cli;
pub mod config;
pub mod domain;
pub mod error;
pub mod http;
pub mod jobs;
pub mod storage;
pub mod stripe;
pub mod telemetry;
