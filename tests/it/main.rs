//! Integration tests: the real app on 127.0.0.1:0 with a fresh SQLite file,
//! spoken to over HTTP (and the real binary for the CLI).

mod helpers;
mod webhook;
mod stories;
mod clicks;
mod attribution;
mod sweep;
mod cli;
