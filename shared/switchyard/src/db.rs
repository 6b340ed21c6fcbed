//! The database pool: SQLite by default, Postgres by URL, one set of runtime queries for both.
//!
//! Each service embeds its migrations per backend at compile time ([`Migrations`]) and runs them
//! at start-up; the build never needs a live database. Queries use `$1`-style parameters, which
//! both SQLite and Postgres accept, and only the types the `Any` driver carries (integers, text).

use std::borrow::Cow;
use std::path::Path;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::{Migration as SqlxMigration, MigrationType, Migrator};
use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Executor, SqlSafeStr, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};

/// Which database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file.
    Sqlite,
    /// A Postgres server.
    Postgres,
}

/// One migration, embedded with `include_str!`.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Increasing version number.
    pub version: i64,
    /// What it does.
    pub description: &'static str,
    /// The SQL.
    pub sql: &'static str,
}

/// A service's migrations, one list per backend.
#[derive(Debug, Clone, Copy)]
pub struct Migrations {
    /// Migrations for SQLite.
    pub sqlite: &'static [Migration],
    /// Migrations for Postgres.
    pub postgres: &'static [Migration],
}

/// A service's [`Migrations`] for both backends: its own (`version => "description": SQL`,
/// portable SQL) followed by the platform's outbox and inbox tables at the versions given.
///
/// ```
/// const POINTS: &str = "CREATE TABLE points (user_id TEXT PRIMARY KEY, points BIGINT NOT NULL)";
/// const MIGRATIONS: switchyard::db::Migrations =
///     switchyard::migrations![1 => "points": POINTS; outbox = 2, inbox = 3];
/// assert_eq!(MIGRATIONS.sqlite.len(), 3);
/// assert_eq!(MIGRATIONS.postgres[1].description, "outbox");
/// ```
#[macro_export]
macro_rules! migrations {
    ($($version:literal => $description:literal : $sql:expr),* ; outbox = $outbox:literal, inbox = $inbox:literal) => {
        $crate::db::Migrations {
            sqlite: &[
                $($crate::db::Migration { version: $version, description: $description, sql: $sql },)*
                $crate::db::Migration { version: $outbox, description: "outbox", sql: $crate::outbox::SQLITE_SQL },
                $crate::db::Migration { version: $inbox, description: "inbox", sql: $crate::inbox::SQL },
            ],
            postgres: &[
                $($crate::db::Migration { version: $version, description: $description, sql: $sql },)*
                $crate::db::Migration { version: $outbox, description: "outbox", sql: $crate::outbox::POSTGRES_SQL },
                $crate::db::Migration { version: $inbox, description: "inbox", sql: $crate::inbox::SQL },
            ],
        }
    };
}

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL is neither `sqlite:` nor `postgres:`.
    #[error("unsupported database url {0:?}: use sqlite://path/file.db or postgres://user@host/db")]
    UnsupportedUrl(String),
    /// The directory for the SQLite file could not be created.
    #[error("failed to create database directory {path}")]
    CreateDir {
        /// The path.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The database did not accept the connection.
    #[error("failed to connect to database {url}")]
    Connect {
        /// The database URL.
        url: String,
        /// The underlying error.
        #[source]
        source: sqlx::Error,
    },
    /// A migration failed.
    #[error("failed to migrate database {url}")]
    Migrate {
        /// The database URL.
        url: String,
        /// The underlying error.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
}

/// A database pool and the backend behind it.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    /// SQLite on a file: the one connection every [`Db::begin_write`] transaction runs on. Each
    /// SQLite connection has its own page cache, which it empties whenever another connection
    /// has written since its last transaction; writes spread over a pool would each start cold
    /// and read their pages back from the file, writes on one connection find them cached.
    writer: Option<AnyPool>,
    backend: Backend,
    /// SQLite has one writer at a time. Writers of this process queue here, first come first served, instead of
    /// meeting at the file lock, where SQLite's busy handler sleeps in growing steps (up to 100 ms)
    /// and turns contention into long tail latencies.
    write_lock: Arc<Mutex<()>>,
    /// The lock that makes this process the only one on its SQLite file, held as long as any
    /// clone of the pool lives (see [`crate::ownership`]).
    owner: Option<Arc<crate::ownership::Ownership>>,
}

/// A write transaction: a [`Transaction`] that holds this process's SQLite write slot until it
/// is committed, rolled back or dropped. It dereferences to the connection, like a transaction.
pub struct WriteTx {
    tx: Transaction<'static, Any>,
    _slot: Option<OwnedMutexGuard<()>>,
}

impl WriteTx {
    /// Commits the transaction.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    /// Rolls the transaction back.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

/// A connection for single-statement writes ([`Db::acquire_write`]), holding this process's
/// SQLite write slot until it is dropped. It dereferences to the connection.
pub struct WriteConn {
    conn: PoolConnection<Any>,
    _slot: Option<OwnedMutexGuard<()>>,
}

impl std::ops::Deref for WriteConn {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for WriteConn {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.conn
    }
}

impl std::ops::Deref for WriteTx {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }
}

impl Db {
    /// Ties an ownership lock to the pool: it is released when the last clone is dropped.
    pub fn owned_by(mut self, owner: Arc<crate::ownership::Ownership>) -> Db {
        self.owner = Some(owner);
        self
    }

    /// Opens the database at `url` (creating a SQLite file and its directory when missing) and
    /// runs the migrations for its backend.
    pub async fn connect(url: &str, migrations: &Migrations) -> Result<Db, DbError> {
        install_default_drivers();
        let backend = backend_of(url)?;
        if backend == Backend::Sqlite
            && let Some(dir) = sqlite_path(url).and_then(|p| p.parent().map(Path::to_path_buf))
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(&dir)
                .map_err(|source| DbError::CreateDir { path: dir.display().to_string(), source })?;
        }
        let pool_options = |max_connections: u32| {
            let options = AnyPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(10));
            if backend != Backend::Sqlite {
                return options;
            }
            // A connection to a local file does not go stale: no ping before each use (with
            // SQLite every statement, a ping too, is a round trip to the connection's thread).
            options.test_before_acquire(false).after_connect(|conn, _meta| {
                Box::pin(async move {
                    // WAL lets readers run beside the one writer; the busy timeout makes writers
                    // queue instead of failing while another holds the write lock.
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA busy_timeout = 10000").await?;
                    // In WAL mode NORMAL syncs at checkpoints, not at every commit: a commit
                    // survives the process being killed, but an OS crash or power cut may lose
                    // the last ones. Postgres is the choice when that matters.
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                    Ok(())
                })
            })
        };
        let connect_error = |source| DbError::Connect { url: redact(url), source };
        let pool = pool_options(if backend == Backend::Sqlite { 8 } else { 16 })
            .connect(url)
            .await
            .map_err(connect_error)?;
        let list = match backend {
            Backend::Sqlite => migrations.sqlite,
            Backend::Postgres => migrations.postgres,
        };
        let migrator = Migrator::with_migrations(
            list.iter()
                .map(|m| {
                    SqlxMigration::new(
                        m.version,
                        Cow::Borrowed(m.description),
                        MigrationType::Simple,
                        m.sql.into_sql_str(),
                        false,
                    )
                })
                .collect(),
        );
        migrator.run(&pool).await.map_err(|source| DbError::Migrate { url: redact(url), source })?;
        // (An in-memory database is one per pool: it keeps its writes on the one pool.)
        let writer = match backend {
            Backend::Sqlite if sqlite_path(url).is_some() => {
                Some(pool_options(1).connect(url).await.map_err(connect_error)?)
            }
            _ => None,
        };
        Ok(Db { pool, writer, backend, write_lock: Arc::new(Mutex::new(())), owner: None })
    }

    /// The pool, for queries.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The backend behind the pool.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Begins a transaction that will write. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`), so two writers queue instead of failing when both upgrade a read lock.
    pub async fn begin_write(&self) -> Result<WriteTx, sqlx::Error> {
        let (pool, slot) = self.write_slot().await;
        let tx = match self.backend {
            Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => pool.begin().await?,
        };
        Ok(WriteTx { tx, _slot: slot })
    }

    /// The connection for a write that is one statement, run on its own (autocommit: the
    /// statement is its transaction), saving the `BEGIN` and `COMMIT` round trips of
    /// [`Db::begin_write`]. On SQLite it holds the write slot and runs on the writer connection,
    /// like a write transaction.
    pub async fn acquire_write(&self) -> Result<WriteConn, sqlx::Error> {
        let (pool, slot) = self.write_slot().await;
        Ok(WriteConn { conn: pool.acquire().await?, _slot: slot })
    }

    /// Where this process writes: on SQLite the writer connection, once this caller holds the
    /// write slot (the guard); on Postgres the pool, with no slot.
    async fn write_slot(&self) -> (&AnyPool, Option<OwnedMutexGuard<()>>) {
        match self.backend {
            Backend::Sqlite => {
                let slot = self.write_lock.clone().lock_owned().await;
                (self.writer.as_ref().unwrap_or(&self.pool), Some(slot))
            }
            Backend::Postgres => (&self.pool, None),
        }
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        self.pool.execute("SELECT 1").await.map(|_| ())
    }

    /// Closes the pool, waiting for connections in use to come back.
    pub async fn close(&self) {
        if let Some(writer) = &self.writer {
            writer.close().await;
        }
        self.pool.close().await;
    }
}

/// `$start, $start+1, ...` for `count` parameters: an `IN (...)` list both SQLite and Postgres
/// read (the `Any` driver's query builder writes `?`, which Postgres does not).
pub fn placeholders(start: usize, count: usize) -> String {
    (start..start + count).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// The `VALUES` rows of a multi-row insert: `count` rows of `per_row` parameters each,
/// numbered from `$1` row after row (a value every row shares is bound in each row, so the
/// parameters stay in sequence and [`positional`] can make them cheap on SQLite).
/// `value_rows(2, 2)` is `($1, $2), ($3, $4)`.
pub fn value_rows(count: usize, per_row: usize) -> String {
    (0..count)
        .map(|row| format!("({})", placeholders(1 + row * per_row, per_row)))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Backend {
    /// The backend of a connection of the `Any` driver.
    pub fn of(conn: &AnyConnection) -> Backend {
        if conn.backend_name().eq_ignore_ascii_case("sqlite") { Backend::Sqlite } else { Backend::Postgres }
    }
}

/// `sql` as `backend` binds it fastest. On SQLite, a statement whose parameters are `$1, $2, ...,
/// $n`, each once and in that sequence (a multi-row insert, an `IN` list), gets bare `?` parameters
/// instead: sqlx asks SQLite for the name of every parameter it binds, and SQLite finds a name
/// by a scan of the statement's names, so binding n named parameters takes n²/2 steps (a
/// 64-row insert of 10 columns: 200,000; measured at 5 % of the machine in a consumer's batch),
/// while bare ones have no names. Any other statement (a parameter used twice or out of sequence, a
/// `?` of its own) is returned as it is, as is every statement for Postgres.
pub fn positional(backend: Backend, sql: String) -> String {
    if backend != Backend::Sqlite {
        return sql;
    }
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut next = 1usize;
    let mut quote: Option<u8> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        match quote {
            Some(q) if byte == q => quote = None,
            Some(_) => {}
            None if byte == b'\'' || byte == b'"' => quote = Some(byte),
            None if byte == b'?' => return sql,
            None if byte == b'$' => {
                let digits = bytes[i + 1..].iter().take_while(|b| b.is_ascii_digit()).count();
                let number = sql[i + 1..i + 1 + digits].parse::<usize>().ok();
                if number != Some(next) {
                    return sql;
                }
                next += 1;
                out.push_str(&sql[copied..i]);
                out.push('?');
                i += 1 + digits;
                copied = i;
                continue;
            }
            None => {}
        }
        i += 1;
    }
    out.push_str(&sql[copied..]);
    out
}

/// True when the error is a unique-constraint violation (a row with that key exists).
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

fn backend_of(url: &str) -> Result<Backend, DbError> {
    if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite)
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Backend::Postgres)
    } else {
        Err(DbError::UnsupportedUrl(redact(url)))
    }
}

/// The file of a `sqlite:` URL (`None` for other URLs and in-memory databases).
pub fn sqlite_path(url: &str) -> Option<&Path> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then(|| Path::new(path))
}

/// The URL without its password, for logs and errors.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_number_from_the_start() {
        assert_eq!(placeholders(2, 3), "$2, $3, $4");
        assert_eq!(placeholders(1, 0), "");
    }

    #[test]
    fn value_rows_number_the_parameters_row_after_row() {
        assert_eq!(value_rows(2, 2), "($1, $2), ($3, $4)");
        assert_eq!(value_rows(3, 1), "($1), ($2), ($3)");
        assert_eq!(value_rows(0, 4), "");
    }

    #[test]
    fn parameters_in_sequence_become_bare_on_sqlite_and_nothing_else_changes() {
        let sqlite = |sql: &str| positional(Backend::Sqlite, sql.to_string());
        assert_eq!(
            sqlite(&format!("INSERT INTO t (a, b) VALUES {} ON CONFLICT DO NOTHING", value_rows(2, 2))),
            "INSERT INTO t (a, b) VALUES (?, ?), (?, ?) ON CONFLICT DO NOTHING"
        );
        assert_eq!(
            sqlite("UPDATE t SET a = $1 WHERE b = '$3' AND c = \"$x\" AND id IN ($2, $3)"),
            "UPDATE t SET a = ? WHERE b = '$3' AND c = \"$x\" AND id IN (?, ?)"
        );
        assert_eq!(sqlite("SELECT 1"), "SELECT 1");
        assert_eq!(sqlite("SELECT $10"), "SELECT $10");
        // Out of sequence, used twice, `$` alone, a `?` of its own: as they are.
        for kept in [
            "SELECT $2, $1",
            "UPDATE t SET a = CASE b WHEN $1 THEN $2 END WHERE b IN ($1)",
            "SELECT $1, $",
            "SELECT $1, ?",
            "SELECT 'it''s' || $2",
        ] {
            assert_eq!(sqlite(kept), kept);
        }
        assert_eq!(sqlite("SELECT 'it''s', $1"), "SELECT 'it''s', ?");
        let postgres = "INSERT INTO t (a) VALUES ($1), ($2)";
        assert_eq!(positional(Backend::Postgres, postgres.to_string()), postgres);
    }

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://./data/x.db"), "sqlite://./data/x.db");
    }

    #[test]
    fn the_backend_follows_the_url_scheme() {
        assert_eq!(backend_of("sqlite://a.db").unwrap(), Backend::Sqlite);
        assert_eq!(backend_of("postgres://h/db").unwrap(), Backend::Postgres);
        assert!(matches!(backend_of("mysql://h/db"), Err(DbError::UnsupportedUrl(_))));
        assert_eq!(sqlite_path("sqlite://./data/x.db?mode=rwc"), Some(Path::new("./data/x.db")));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
    }
}
