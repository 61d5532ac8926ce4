//! Integration tests: the real app on 127.0.0.1:0 with a fresh SQLite file,
//! spoken to over HTTP (and the real binary for the CLI).

mod attribution;
mod cli;
mod cli_secrets;
mod clicks;
mod helpers;
mod host;
mod quarantine;
mod stories;
mod sweep;
mod text;
mod webhook;
