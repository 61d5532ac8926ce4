//! SQLite store: the `Store` trait on rusqlite, called synchronously.
//!
//! A point query on an embedded database costs a few microseconds; handing
//! it to another thread and back costs more than the query. So reads and
//! derived writes run on the calling task's thread, on connections of
//! their own behind a lock each, and only three things leave it:
//!
//! - writes that must be on disk before they are answered (deliveries,
//!   clicks, what a human changes) go to the group commit in `writer.rs`;
//! - aggregates and unbounded lists, which scan, run on tokio's blocking
//!   pool (`read_off`);
//! - WAL checkpoints run on a thread of their own.
//!
//! WAL journal, `busy_timeout`, foreign keys on. The write connection is
//! `synchronous=NORMAL`: the writer syncs the WAL itself after each batch,
//! and data derived from stored events (facts, aliases, conversions, their
//! history, processing results) needs no fsync of its own: it can be derived
//! again from the durably stored events, which stay `pending` until their
//! processing result is written (the sweep retries them).
//!
//! The SQL lives by area: `catalog.rs` (settings, clients, links, clicks,
//! sessions), `events.rs`, `conversions.rs`, `reports.rs`; row mapping and
//! query helpers in `rows.rs`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::Connection;

use super::{redact_url, Store, StoreError, StoreResult, UnitEnd};
use crate::domain::model::*;
use crate::domain::report::*;

mod catalog;
mod conversions;
mod events;
mod reports;
mod rows;
#[cfg(test)]
mod tests;
mod unit;
mod wal_sync;
mod writer;

use rows::{map_err, not_found_unless_one};
use writer::{Done, Op};

/// Reader connections: enough for two cores and the blocking pool's scans.
const READERS: usize = 4;

/// Connections map the database file instead of copying pages into a cache
/// of their own: a page read is a memory access, not a system call, and the
/// pages are the kernel's page cache, shared by every connection (each
/// private cache held 2 MiB, and lookups over a large history missed it:
/// Auto-Fix over 100,000 orphans took 8.0 s with it, 5.9 s mapped; 16 MiB
/// private caches on the readers took 9.8 s). It costs webhooks ~10 %: the
/// file grows with every checkpoint and each growth remaps it in every
/// connection that reads next (TLB shootdowns across both cores, perf).
const MAP_DATABASE: &str = "PRAGMA mmap_size = 1073741824;";

/// The page size of a database this store creates (one made before keeps
/// its own: SQLite fixes it when the file is first written). Every commit
/// writes each page it changed to the WAL whole, and a webhook changes one
/// row in each of some twenty tables and indexes, most on a page of its
/// own: with 2 KiB pages a batch writes about half the bytes of 4 KiB
/// ones, and the disk wrote ~400 MB/s at 6,700 webhooks a second. In the
/// webhook benchmark, 16 connections went from 6.9 k to 7.5 k events/s
/// (three runs each, same machine), 64 connections the same within the
/// noise; redirects, attribution over 10 million clicks and Auto-Fix kept
/// their figures. 1 KiB pages did worse (deeper trees, more frames).
const NEW_DATABASE_PAGE_SIZE: &str = "PRAGMA page_size = 2048;";

pub struct SqliteStore {
    conns: Arc<Conns>,
    /// The clients and their secrets: every delivery needs them.
    client_secrets: Mutex<Option<CachedCatalog>>,
    /// Group commit and the WAL file it syncs (`None` for an in-memory
    /// database, which lives in its one connection).
    writer: Option<(writer::Writer, Arc<wal_sync::WalSync>)>,
}

/// The clients and their secrets as of a `client_catalog_version`
/// (migration 0004), which triggers bump on any change to either table.
struct CachedCatalog {
    version: i64,
    /// When `version` was last read; `None`: read it on the next call.
    checked: Option<Instant>,
    list: Arc<[ClientSecrets]>,
}

/// How long the cached clients and secrets are used before the version is
/// read again. Reading it opened a read transaction on every delivery
/// (~4 % of the server's CPU under webhook load, perf); a change made
/// through this store is seen at once (`durable` forgets the cache), one
/// made by another process (the CLI, raw SQL) within this time, or at once
/// by a delivery that the cached secrets cannot verify (ingest asks again).
const CATALOG_RECHECK: Duration = Duration::from_millis(100);

struct Conns {
    /// Every write of the process goes through this connection; a unit of
    /// work holds it for its whole transaction.
    write: Arc<tokio::sync::Mutex<Connection>>,
    /// Connections for reads (empty for an in-memory database: reads use
    /// `write`).
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
}

/// A connection's lock. A panic while it was held cannot leave a
/// transaction open (rusqlite rolls back on drop), so a poisoned lock is
/// still a usable connection.
pub(super) fn lock(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    conn.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Conns {
    /// A free reader if there is one, else the next in turn once it is
    /// free. File databases only (`readers` is not empty).
    fn reader(&self) -> MutexGuard<'_, Connection> {
        let n = self.readers.len();
        let first = self.next_reader.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            if let Ok(conn) = self.readers[(first + i) % n].try_lock() {
                return conn;
            }
        }
        lock(&self.readers[first % n])
    }
}

/// Where a `sqlite:` URL points.
enum Target {
    File(PathBuf),
    Memory,
}

fn parse_url(url: &str) -> StoreResult<Target> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| StoreError::UnsupportedUrl(redact_url(url)))?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path == ":memory:" || query.split('&').any(|p| p == "mode=memory") {
        return Ok(Target::Memory);
    }
    if path.is_empty() {
        return Err(StoreError::UnsupportedUrl(format!(
            "{}: no database file named",
            redact_url(url)
        )));
    }
    Ok(Target::File(PathBuf::from(path)))
}

/// Makes `path` readable and writable by its owner only (0600): creates it
/// so when `create` and it is missing (whatever the umask), tightens it
/// with a warning when group or others may read or write it. The database
/// holds webhook secrets and Stripe API keys.
#[cfg(unix)]
fn owner_only(path: &Path, create: bool) -> StoreResult<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

    let unavailable = |what: &str, e: std::io::Error| {
        StoreError::Unavailable(format!("{what} {}: {e}", path.display()))
    };
    if create {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => tracing::info!(path = %path.display(), "database file created (mode 0600)"),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(unavailable("creating", e)),
        }
    }
    let mode = match std::fs::metadata(path) {
        Ok(meta) => meta.permissions().mode() & 0o777,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !create => return Ok(()),
        Err(e) => return Err(unavailable("reading the permissions of", e)),
    };
    if mode & 0o077 != 0 {
        // Not fatal when it fails (a file of another user shared through
        // its group): the warning says what to fix.
        match std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
            Ok(()) => tracing::warn!(
                path = %path.display(),
                was = format!("{mode:o}"),
                "database file was open to group or others (it holds secrets): now 0600"
            ),
            Err(e) => tracing::warn!(
                path = %path.display(),
                mode = format!("{mode:o}"),
                error = %e,
                "database file is open to group or others (it holds secrets) and could not be restricted: chmod 600 it"
            ),
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn owner_only(_path: &Path, _create: bool) -> StoreResult<()> {
    Ok(())
}

/// Opens one connection with the settings every connection shares.
fn connect(path: &Path) -> StoreResult<Connection> {
    let conn = Connection::open(path).map_err(map_err)?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(map_err)?;
    // Before the WAL is set up: on a new file that is the first write.
    conn.execute_batch(NEW_DATABASE_PAGE_SIZE)
        .map_err(map_err)?;
    conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA journal_mode = WAL;")
        .map_err(map_err)?;
    conn.execute_batch(MAP_DATABASE).map_err(map_err)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if missing) the database a `sqlite:` URL names.
    #[tracing::instrument(skip_all)]
    pub async fn open(url: &str) -> StoreResult<Self> {
        let path = match parse_url(url)? {
            Target::Memory => {
                let conn = Connection::open_in_memory().map_err(map_err)?;
                conn.execute_batch("PRAGMA foreign_keys = ON;")
                    .map_err(map_err)?;
                return Ok(Self {
                    conns: Arc::new(Conns {
                        write: Arc::new(tokio::sync::Mutex::new(conn)),
                        readers: Vec::new(),
                        next_reader: AtomicUsize::new(0),
                    }),
                    client_secrets: Mutex::new(None),
                    writer: None,
                });
            }
            Target::File(path) => path,
        };
        let opened = tokio::task::spawn_blocking(move || -> StoreResult<_> {
            // Before SQLite creates it: the file holds webhook secrets and
            // Stripe API keys. SQLite gives `-wal` and `-shm` the database
            // file's mode; they are checked again once they exist.
            owner_only(&path, true)?;
            let write = connect(&path)?;
            // The writer syncs the WAL after its batches; the checkpoint
            // thread, not a commit, copies pages into the database file.
            // When the WAL starts over after a burst, its file is cut back
            // to 64 MiB.
            write
                .execute_batch(
                    "PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0; \
                     PRAGMA temp_store = MEMORY; PRAGMA journal_size_limit = 67108864;",
                )
                .map_err(map_err)?;
            let readers = (0..READERS)
                .map(|_| connect(&path).map(Mutex::new))
                .collect::<StoreResult<Vec<_>>>()?;
            let checkpointer = connect(&path)?;
            for suffix in ["-wal", "-shm"] {
                let mut side = path.clone().into_os_string();
                side.push(suffix);
                owner_only(Path::new(&side), false)?;
            }
            let mut wal = path.into_os_string();
            wal.push("-wal");
            Ok((write, readers, checkpointer, PathBuf::from(wal)))
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("opening the database: {e}")))?;
        let (write, readers, checkpointer, wal) = opened?;
        let write = Arc::new(tokio::sync::Mutex::new(write));
        let writer = writer::Writer::start(write.clone(), checkpointer, wal.clone())?;
        Ok(Self {
            conns: Arc::new(Conns {
                write,
                readers,
                next_reader: AtomicUsize::new(0),
            }),
            client_secrets: Mutex::new(None),
            writer: Some((writer, Arc::new(wal_sync::WalSync::new(wal)))),
        })
    }

    /// Applies the migrations in `migrations/sqlite` (tracked in SQLite's
    /// `user_version`).
    #[tracing::instrument(skip_all)]
    pub async fn migrate(&self) -> StoreResult<()> {
        let migrations = rusqlite_migration::Migrations::new(vec![
            rusqlite_migration::M::up(include_str!("../../../migrations/sqlite/0001_init.sql")),
            rusqlite_migration::M::up(include_str!(
                "../../../migrations/sqlite/0002_conversions_email_lower.sql"
            )),
            rusqlite_migration::M::up(include_str!(
                "../../../migrations/sqlite/0003_drop_unused_email_index.sql"
            )),
            rusqlite_migration::M::up(include_str!(
                "../../../migrations/sqlite/0004_client_catalog_version.sql"
            )),
            rusqlite_migration::M::up(include_str!(
                "../../../migrations/sqlite/0005_conversions_by_customer_over_time.sql"
            )),
            rusqlite_migration::M::up(include_str!(
                "../../../migrations/sqlite/0006_events_scoped_dedup.sql"
            )),
        ]);
        let mut conn = self.conns.write.lock().await;
        migrations
            .to_latest(&mut conn)
            .map_err(|e| StoreError::Migration(e.to_string()))
    }

    /// This store's identity, to tell its units from another store's.
    fn id(&self) -> usize {
        Arc::as_ptr(&self.conns) as usize
    }

    /// Runs `f` on a reader connection, here (inside a unit of work: on
    /// the unit's connection, which sees the unit's own writes).
    async fn read<T>(&self, f: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        if unit::active(self.id()) {
            return unit::with(f);
        }
        if self.conns.readers.is_empty() {
            return f(&*self.conns.write.lock().await);
        }
        f(&self.conns.reader())
    }

    /// Runs `f` on a reader connection on tokio's blocking pool: for
    /// queries that scan, so that they never hold up an async worker.
    async fn read_off<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        if unit::active(self.id()) || self.conns.readers.is_empty() {
            return self.read(f).await;
        }
        let conns = self.conns.clone();
        tokio::task::spawn_blocking(move || f(&conns.reader()))
            .await
            .map_err(|e| StoreError::Unavailable(format!("a read task failed: {e}")))?
    }

    /// Writes derived data on the write connection, here, in one
    /// transaction (or the current unit's), without an fsync of its own
    /// (see the module's doc).
    async fn derive<T>(&self, f: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        if unit::active(self.id()) {
            return unit::with(f);
        }
        let conn = self.conns.write.lock().await;
        let tx =
            rusqlite::Transaction::new_unchecked(&conn, rusqlite::TransactionBehavior::Immediate)
                .map_err(map_err)?;
        let out = f(&tx)?;
        tx.commit().map_err(map_err)?;
        Ok(out)
    }

    /// A write that is synced before it returns (group commit); returns
    /// the rows it changed.
    async fn durable(
        &self,
        exec: impl Fn(&Connection) -> StoreResult<usize> + Send + 'static,
    ) -> StoreResult<usize> {
        let written = self.write_op(Op::Exec(Box::new(exec))).await;
        // These are the few writes a human makes; one may have changed a
        // client or a secret, which the next delivery must see.
        self.forget_cached_clients();
        written.map(|done| match done {
            Done::Rows(n) => n,
            Done::Click | Done::Event(_) => 0,
        })
    }

    fn cached_catalog(&self) -> MutexGuard<'_, Option<CachedCatalog>> {
        self.client_secrets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    async fn write_op(&self, op: Op) -> StoreResult<Done> {
        if unit::active(self.id()) {
            // The unit holds the connection: write here, sync at its commit.
            unit::needs_sync();
            return unit::with(|c| writer::execute(c, &op));
        }
        match &self.writer {
            Some((writer, _)) => writer.write(op).await,
            None => writer::write_one(&*self.conns.write.lock().await, &op),
        }
    }

    /// Runs `f` on the write connection, outside any transaction: for the
    /// benchmark's bulk loads and for tests.
    pub async fn with_write_connection<T>(&self, f: impl FnOnce(&Connection) -> T) -> T {
        f(&*self.conns.write.lock().await)
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn unit<'a>(
        &'a self,
        work: futures_util::future::BoxFuture<'a, UnitEnd>,
    ) -> StoreResult<()> {
        if unit::active(self.id()) {
            return unit::nested(work).await;
        }
        let conn = self.conns.write.clone().lock_owned().await;
        let wal = self.writer.as_ref().map(|(_, wal)| wal.clone());
        unit::run(self.id(), conn, work, wal).await
    }

    async fn sync(&self) -> StoreResult<()> {
        match &self.writer {
            Some((_, wal)) => wal.after_commit().await,
            None => Ok(()),
        }
    }

    async fn ping(&self) -> StoreResult<()> {
        self.read(|c| rows::scalar::<i64>(c, "SELECT 1", []).map(drop))
            .await
    }

    async fn ping_write(&self) -> StoreResult<()> {
        // Through the group commit, like a delivery: its transaction, its
        // commit and the WAL's fsync. Not `durable`: nothing a delivery
        // depends on changed, the cached clients stay.
        let now = now_millis().to_string();
        self.write_op(Op::Exec(Box::new(move |c| {
            catalog::set_setting(c, super::READY_PROBE_KEY, &now)
        })))
        .await
        .map(drop)
    }

    // ---- settings -----------------------------------------------------------

    async fn get_setting(&self, key: &str) -> StoreResult<Option<String>> {
        self.read(|c| catalog::get_setting(c, key)).await
    }

    async fn init_setting(&self, key: &str, value: &str) -> StoreResult<String> {
        let (k, v) = (key.to_string(), value.to_string());
        self.durable(move |c| catalog::init_setting(c, &k, &v))
            .await?;
        self.read(|c| catalog::get_setting(c, key))
            .await?
            .ok_or(StoreError::NotFound)
    }

    async fn set_setting(&self, key: &str, value: &str) -> StoreResult<()> {
        let (k, v) = (key.to_string(), value.to_string());
        self.durable(move |c| catalog::set_setting(c, &k, &v))
            .await
            .map(drop)
    }

    // ---- clients ------------------------------------------------------------

    async fn insert_client(&self, client: &Client) -> StoreResult<()> {
        let client = client.clone();
        self.durable(move |c| catalog::insert_client(c, &client))
            .await
            .map(drop)
    }

    async fn list_clients(&self) -> StoreResult<Vec<Client>> {
        self.read(catalog::list_clients).await
    }

    async fn get_client(&self, id: &str) -> StoreResult<Option<Client>> {
        self.read(|c| catalog::client_where(c, "c.id", id)).await
    }

    async fn find_client_by_name(&self, name: &str) -> StoreResult<Option<Client>> {
        self.read(|c| catalog::client_where(c, "c.name", name))
            .await
    }

    async fn update_client_settings(
        &self,
        id: &str,
        settings: &AttributionSettings,
    ) -> StoreResult<()> {
        let (id, settings) = (id.to_string(), *settings);
        let n = self
            .durable(move |c| catalog::update_client_settings(c, &id, &settings))
            .await?;
        not_found_unless_one(n)
    }

    async fn add_webhook_secret(&self, client_id: &str, secret: &WebhookSecret) -> StoreResult<()> {
        let (id, secret, now) = (
            client_id.to_string(),
            secret.expose().to_string(),
            now_millis(),
        );
        self.durable(move |c| catalog::add_webhook_secret(c, &id, &secret, now))
            .await
            .map(drop)
    }

    /// The list stays; only the version is read again on the next call,
    /// so that a flood of deliveries that fail verification costs one small
    /// read each, not a reload of every client.
    fn forget_cached_clients(&self) {
        if let Some(cached) = self.cached_catalog().as_mut() {
            cached.checked = None;
        }
    }

    async fn list_client_secrets(&self) -> StoreResult<Arc<[ClientSecrets]>> {
        if unit::active(self.id()) {
            // A unit may have changed them and not committed yet.
            return self.read(catalog::list_client_secrets).await.map(Arc::from);
        }
        let now = Instant::now();
        let fresh = |cached: &CachedCatalog| {
            cached
                .checked
                .is_some_and(|at| now.duration_since(at) < CATALOG_RECHECK)
        };
        if let Some(cached) = self.cached_catalog().as_ref().filter(|c| fresh(c)) {
            return Ok(cached.list.clone());
        }
        self.read(|c| {
            // The version first: a change committed between the two reads
            // leaves a newer list under an older number, which the next
            // check reads again.
            let version = catalog::client_catalog_version(c)?;
            let mut cache = self.cached_catalog();
            let list = match cache.as_mut().filter(|cached| cached.version == version) {
                Some(cached) => {
                    cached.checked = Some(now);
                    cached.list.clone()
                }
                None => {
                    drop(cache);
                    let list: Arc<[ClientSecrets]> = catalog::list_client_secrets(c)?.into();
                    *self.cached_catalog() = Some(CachedCatalog {
                        version,
                        checked: Some(now),
                        list: list.clone(),
                    });
                    list
                }
            };
            Ok(list)
        })
        .await
    }

    // ---- links --------------------------------------------------------------

    #[tracing::instrument(skip_all)]
    async fn insert_link(&self, link: &Link) -> StoreResult<()> {
        let link = link.clone();
        self.durable(move |c| catalog::insert_link(c, &link))
            .await
            .map(drop)
    }

    async fn list_links(&self, client_id: Option<&str>) -> StoreResult<Vec<Link>> {
        self.read(|c| match client_id {
            Some(id) => catalog::load_links(c, "l.client_id = ?", &[id]),
            None => catalog::load_links(c, "1 = 1", &[]),
        })
        .await
    }

    async fn get_link(&self, id: &str) -> StoreResult<Option<Link>> {
        self.read(|c| catalog::load_links(c, "l.id = ?", &[id]))
            .await
            .map(|links| links.into_iter().next())
    }

    async fn find_links_by_slug(&self, slug: &str) -> StoreResult<Vec<Link>> {
        self.read(|c| catalog::load_links(c, "l.slug = ?", &[slug]))
            .await
    }

    async fn find_link(&self, client_id: &str, slug: &str) -> StoreResult<Option<Link>> {
        self.read(|c| catalog::load_links(c, "l.client_id = ? AND l.slug = ?", &[client_id, slug]))
            .await
            .map(|links| links.into_iter().next())
    }

    async fn find_link_by_promo_code(
        &self,
        client_id: &str,
        code: &str,
    ) -> StoreResult<Option<Link>> {
        self.read(|c| catalog::find_link_by_promo_code(c, client_id, code))
            .await
    }

    // ---- clicks -------------------------------------------------------------

    async fn insert_click(&self, click: &Click) -> StoreResult<()> {
        self.write_op(Op::Click(Box::new(click.clone())))
            .await
            .map(drop)
    }

    async fn get_click(&self, client_id: &str, click_id: &str) -> StoreResult<Option<Click>> {
        self.read(|c| catalog::get_click(c, client_id, click_id))
            .await
    }

    async fn latest_click(
        &self,
        client_id: &str,
        from: Option<Millis>,
        to: Millis,
    ) -> StoreResult<Option<Click>> {
        self.read(|c| catalog::latest_click(c, client_id, from, to))
            .await
    }

    async fn recent_clicks_for_link(&self, link_id: &str, limit: i64) -> StoreResult<Vec<Click>> {
        self.read(|c| catalog::recent_clicks_for_link(c, link_id, limit))
            .await
    }

    async fn count_clicks(&self, client_id: Option<&str>) -> StoreResult<i64> {
        let client_id = client_id.map(str::to_string);
        self.read_off(move |c| catalog::count_clicks(c, client_id.as_deref()))
            .await
    }

    // ---- webhook events -----------------------------------------------------

    #[tracing::instrument(skip_all)]
    async fn insert_event(&self, event: &NewEvent) -> StoreResult<InsertEvent> {
        let id = match self.write_op(Op::Event(Box::new(event.clone()))).await? {
            Done::Event(id) => id,
            Done::Click | Done::Rows(_) => None,
        };
        match id {
            Some(id) => Ok(InsertEvent::Inserted(id)),
            None => self.read(|c| events::landed(c, event, None)).await,
        }
    }

    #[tracing::instrument(skip_all, fields(events = events.len()))]
    async fn insert_events(&self, events: &[NewEvent]) -> Vec<StoreResult<InsertEvent>> {
        if !unit::active(self.id()) {
            return crate::storage::insert_each(self, events).await;
        }
        unit::needs_sync();
        let together = unit::with(|c| {
            let rows: Vec<&NewEvent> = events.iter().collect();
            // All or none: if one row fails, the others are tried alone.
            c.execute_batch("SAVEPOINT insert_events")
                .map_err(map_err)?;
            match events::insert_many(c, &rows) {
                Ok(ids) => {
                    c.execute_batch("RELEASE insert_events").map_err(map_err)?;
                    Ok(rows
                        .iter()
                        .zip(ids)
                        .map(|(e, id)| events::landed(c, e, id))
                        .collect())
                }
                Err(e) => {
                    c.execute_batch("ROLLBACK TO insert_events; RELEASE insert_events")
                        .map_err(map_err)?;
                    Err(e)
                }
            }
        });
        match together {
            Ok(out) => out,
            Err(_) => events
                .iter()
                .map(|e| {
                    unit::with(|c| {
                        events::insert_event(c, e).and_then(|id| events::landed(c, e, id))
                    })
                })
                .collect(),
        }
    }

    async fn get_event(&self, id: i64) -> StoreResult<Option<StoredEvent>> {
        self.read(|c| events::get_event(c, id)).await
    }

    async fn find_event_by_dedup_key(&self, dedup_key: &str) -> StoreResult<Option<StoredEvent>> {
        self.read(|c| events::event_by_dedup_key(c, dedup_key))
            .await
    }

    async fn record_delivery(&self, id: i64) -> StoreResult<()> {
        not_found_unless_one(self.derive(|c| events::record_delivery(c, id)).await?)
    }

    async fn mark_event_verified(
        &self,
        id: i64,
        client_id: &str,
        client_method: ClientMethod,
        headers: Option<&str>,
        body: Option<&[u8]>,
    ) -> StoreResult<bool> {
        // The verified copy of a raw event: synced like the delivery was.
        let client_id = client_id.to_string();
        let headers = headers.map(str::to_string);
        let body = body.map(<[u8]>::to_vec);
        let n = self
            .durable(move |c| {
                events::mark_event_verified(
                    c,
                    id,
                    &client_id,
                    client_method,
                    headers.as_deref(),
                    body.as_deref(),
                )
            })
            .await?;
        Ok(n == 1)
    }

    async fn set_event_unverified_reason(
        &self,
        id: i64,
        reason: UnverifiedReason,
    ) -> StoreResult<()> {
        self.derive(|c| events::set_event_unverified_reason(c, id, reason))
            .await
            .map(drop)
    }

    async fn set_event_processing(
        &self,
        id: i64,
        client: Option<(&str, ClientMethod)>,
        processing: Processing,
        error: Option<&str>,
    ) -> StoreResult<()> {
        not_found_unless_one(
            self.derive(|c| events::set_event_processing(c, id, client, processing, error))
                .await?,
        )
    }

    async fn list_events(&self, filter: &EventFilter) -> StoreResult<Vec<StoredEvent>> {
        let filter = filter.clone();
        self.read_off(move |c| events::list_events(c, &filter))
            .await
    }

    async fn events_to_retry(
        &self,
        max_attempts: i64,
        limit: i64,
    ) -> StoreResult<Vec<StoredEvent>> {
        self.read_off(move |c| events::events_to_retry(c, max_attempts, limit))
            .await
    }

    // ---- sale facts and purchase keys ---------------------------------------

    async fn upsert_fact(&self, fact: &SaleFact) -> StoreResult<()> {
        self.derive(|c| conversions::upsert_fact(c, fact))
            .await
            .map(drop)
    }

    async fn facts_for_purchase(
        &self,
        client_id: &str,
        purchase_key: &str,
    ) -> StoreResult<Vec<SaleFact>> {
        self.read(|c| conversions::facts_for_purchase(c, client_id, purchase_key))
            .await
    }

    async fn resolve_alias(&self, client_id: &str, alias: &str) -> StoreResult<Option<String>> {
        self.read(|c| conversions::resolve_alias(c, client_id, alias))
            .await
    }

    async fn set_alias(&self, client_id: &str, alias: &str, purchase_key: &str) -> StoreResult<()> {
        if alias == purchase_key {
            // A key is trivially its own; a self-alias would only hide an
            // existing mapping of it.
            return Ok(());
        }
        self.derive(|c| conversions::set_alias(c, client_id, alias, purchase_key))
            .await
            .map(drop)
    }

    // ---- conversions ----------------------------------------------------------

    async fn get_conversion(&self, id: &str) -> StoreResult<Option<Conversion>> {
        self.read(|c| conversions::get_conversion(c, id)).await
    }

    async fn get_conversion_by_key(
        &self,
        client_id: &str,
        purchase_key: &str,
    ) -> StoreResult<Option<Conversion>> {
        self.read(|c| conversions::get_conversion_by_key(c, client_id, purchase_key))
            .await
    }

    #[tracing::instrument(skip_all)]
    async fn save_conversion(&self, conversion: &Conversion) -> StoreResult<()> {
        // A human decision cannot be derived again: commit it synced.
        if conversion.method == Some(Method::Manual) {
            let conversion = conversion.clone();
            self.durable(move |c| conversions::save_conversion(c, &conversion))
                .await
                .map(drop)
        } else {
            self.derive(|c| conversions::save_conversion(c, conversion))
                .await
                .map(drop)
        }
    }

    async fn merge_conversion(&self, from_id: &str, into_id: &str) -> StoreResult<()> {
        not_found_unless_one(
            self.derive(|c| conversions::merge_conversion(c, from_id, into_id))
                .await?,
        )
    }

    async fn rekey_conversion(&self, id: &str, purchase_key: &str) -> StoreResult<()> {
        not_found_unless_one(
            self.derive(|c| conversions::rekey_conversion(c, id, purchase_key))
                .await?,
        )
    }

    async fn list_conversions(&self, filter: &ConversionFilter) -> StoreResult<Vec<Conversion>> {
        // One customer's or one purchase's conversions are an index seek;
        // anything else may scan.
        if filter.customer.is_some() || filter.purchase_key.is_some() {
            return self
                .read(|c| conversions::list_conversions(c, filter))
                .await;
        }
        let filter = filter.clone();
        self.read_off(move |c| conversions::list_conversions(c, &filter))
            .await
    }

    async fn customer_history(
        &self,
        client_id: &str,
        customer: Option<&str>,
        email: Option<&str>,
        before: Millis,
        exclude_id: &str,
    ) -> StoreResult<Option<Conversion>> {
        self.read(|c| {
            conversions::customer_history(c, client_id, customer, email, before, exclude_id)
        })
        .await
    }

    async fn orphan_ids(&self, client_id: Option<&str>, limit: i64) -> StoreResult<Vec<String>> {
        let client_id = client_id.map(str::to_string);
        self.read_off(move |c| conversions::orphan_ids(c, client_id.as_deref(), limit))
            .await
    }

    async fn add_history(&self, entry: &NewHistoryEntry) -> StoreResult<()> {
        // A human decision cannot be derived again: commit it synced.
        if entry.to_method == Some(Method::Manual) {
            let entry = entry.clone();
            self.durable(move |c| conversions::add_history(c, &entry))
                .await
                .map(drop)
        } else {
            self.derive(|c| conversions::add_history(c, entry))
                .await
                .map(drop)
        }
    }

    async fn list_history(&self, conversion_id: &str) -> StoreResult<Vec<HistoryEntry>> {
        self.read(|c| conversions::list_history(c, conversion_id))
            .await
    }

    async fn get_history_entry(&self, id: i64) -> StoreResult<Option<HistoryEntry>> {
        self.read(|c| conversions::get_history_entry(c, id)).await
    }

    // ---- reports ----------------------------------------------------------------

    async fn client_activity(&self, now: Millis) -> StoreResult<Vec<ClientActivity>> {
        self.read_off(move |c| reports::client_activity(c, now))
            .await
    }

    async fn currency_totals(
        &self,
        client_id: Option<&str>,
        livemode: bool,
    ) -> StoreResult<Vec<CurrencyTotal>> {
        let client_id = client_id.map(str::to_string);
        self.read_off(move |c| reports::currency_totals(c, client_id.as_deref(), livemode))
            .await
    }

    async fn daily_counts(
        &self,
        client_id: Option<&str>,
        from: Millis,
    ) -> StoreResult<Vec<DailyCount>> {
        let client_id = client_id.map(str::to_string);
        self.read_off(move |c| reports::daily_counts(c, client_id.as_deref(), from))
            .await
    }

    async fn link_stats(&self, client_id: &str, livemode: bool) -> StoreResult<Vec<LinkStats>> {
        let client_id = client_id.to_string();
        self.read_off(move |c| reports::link_stats(c, &client_id, livemode))
            .await
    }

    // ---- admin sessions ---------------------------------------------------------

    async fn insert_session(&self, session: &AdminSession) -> StoreResult<()> {
        let session = session.clone();
        self.durable(move |c| catalog::insert_session(c, &session))
            .await
            .map(drop)
    }

    async fn get_session(&self, id_hash: &str, now: Millis) -> StoreResult<Option<AdminSession>> {
        self.read(|c| catalog::get_session(c, id_hash, now)).await
    }

    async fn delete_session(&self, id_hash: &str) -> StoreResult<()> {
        let id_hash = id_hash.to_string();
        self.durable(move |c| catalog::delete_session(c, &id_hash))
            .await
            .map(drop)
    }
}
