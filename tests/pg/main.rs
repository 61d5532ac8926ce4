//! The integration suite of `tests/it`, on PostgreSQL: the same test files,
//! with `helpers` giving every test a fresh PostgreSQL database.
//!
//! Without a reachable server (`SALESTRACK_TEST_PG_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`) every test passes without
//! running after printing `skipped: PostgreSQL not reachable at …`;
//! `SALESTRACK_REQUIRE_PG=1` (set by `.ci/run`) makes them fail instead.

mod helpers;

#[path = "../it/attribution.rs"]
mod attribution;
#[path = "../it/cli.rs"]
mod cli;
#[path = "../it/cli_secrets.rs"]
mod cli_secrets;
#[path = "../it/clicks.rs"]
mod clicks;
#[path = "../it/host.rs"]
mod host;
#[path = "../it/quarantine.rs"]
mod quarantine;
#[path = "../it/stories.rs"]
mod stories;
#[path = "../it/sweep.rs"]
mod sweep;
#[path = "../it/text.rs"]
mod text;
#[path = "../it/webhook.rs"]
mod webhook;
