//! One interface over two engines. Ouro's SQL is written once: both SQLite (3.35+) and PostgreSQL
//! accept `$1` placeholders, `RETURNING` and `ON CONFLICT`. Columns use portable types only
//! (BIGINT, TEXT, BOOLEAN; time as Unix milliseconds), so a [`Row`] reads the same on both.
//!
//! SQLite writer discipline: all writes go through one pooled connection that opens transactions
//! with `BEGIN IMMEDIATE`, so writers queue in-process instead of failing with SQLITE_BUSY, and a
//! read-then-write transaction can never lose the upgrade race. Reads use a separate pool and, in
//! WAL mode, never block the writer. Other processes on the same file (the `ouro admin` commands)
//! wait up to the busy timeout.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, Column, PgConnection, Postgres, Sqlite, SqliteConnection, Transaction};
use sqlx::{Row as _, TypeInfo};

use crate::StoreError;

/// Which engine a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// A pooled PostgreSQL connection idle longer than this is pinged before it is handed out.
const PING_IDLE_AFTER: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub(crate) enum Pools {
    Sqlite {
        write: sqlx::SqlitePool,
        read: sqlx::SqlitePool,
        /// When the writer last changed the planner statistics (see [`StatsClock`]).
        stats: StatsClock,
    },
    Postgres(sqlx::PgPool),
}

/// When ANALYZE last rewrote SQLite's planner statistics, as nanoseconds since the clock was made
/// (0: not since). SQLite loads `sqlite_stat1` into a connection only when it reads the schema,
/// and ANALYZE does not change the schema, so a read connection opened before an ANALYZE keeps
/// planning with the old numbers until it is closed. Statistics taken while the database was
/// nearly empty made the readers scan the whole event ledger for "events after seq N" (a
/// 100,000-item backlog: 4,000 pages read per rank move, 10 ms instead of 1.5); the read pool
/// therefore retires connections older than the last ANALYZE when they are next handed out.
#[derive(Clone)]
pub(crate) struct StatsClock {
    base: std::time::Instant,
    changed: Arc<std::sync::atomic::AtomicU64>,
}

impl StatsClock {
    fn new() -> StatsClock {
        StatsClock {
            base: std::time::Instant::now(),
            changed: Arc::default(),
        }
    }

    fn mark(&self) {
        let now = self.base.elapsed().as_nanos() as u64;
        self.changed
            .store(now.max(1), std::sync::atomic::Ordering::Release);
    }

    /// Whether a connection opened `age` ago predates the last change.
    fn predates(&self, age: Duration) -> bool {
        let changed = self.changed.load(std::sync::atomic::Ordering::Acquire);
        let opened = self.base.elapsed().saturating_sub(age).as_nanos() as u64;
        changed != 0 && opened <= changed
    }
}

/// Connection pool statistics for `/metrics`.
#[derive(Debug, Clone, Copy)]
pub struct PoolStats {
    pub size: u32,
    pub idle: u32,
}

impl Pools {
    pub(crate) async fn connect(url: &str) -> Result<Pools, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(url).map_err(|e| StoreError::Config(format!(
                "invalid PostgreSQL URL: {e}; expected postgres://USER:PASSWORD@HOST:PORT/DATABASE"
            )))?;
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                // sqlx pings every connection it hands out (a round trip) and again when it
                // takes it back. The ping on return already drops a connection that broke while
                // in use, so only one that sat idle a while (a restarted server, a dropped
                // socket) is worth testing before use: an API request takes up to three
                // connections (token, project, transaction), each ping a round trip on its path.
                .test_before_acquire(false)
                .before_acquire(|conn, meta| {
                    Box::pin(async move {
                        if meta.idle_for > PING_IDLE_AFTER {
                            sqlx::Connection::ping(conn).await?;
                        }
                        Ok(true)
                    })
                })
                .connect_with(opts)
                .await
                .map_err(|e| StoreError::Connect(format!("cannot connect to PostgreSQL: {e}")))?;
            Ok(Pools::Postgres(pool))
        } else if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)
                .map_err(|e| StoreError::Config(format!("invalid SQLite URL {url:?}: {e}")))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10))
                // sqlx hands rows from its SQLite thread to the async side through a bounded
                // channel; at the default 50 a 2,000-row board blocks and wakes that thread
                // dozens of times. A larger buffer lets the statement run through.
                .row_buffer_size(1024);
            let write = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .connect_with(opts.clone())
                .await
                .map_err(|e| {
                    StoreError::Connect(format!("cannot open SQLite database {url}: {e}"))
                })?;
            let stats = StatsClock::new();
            let clock = stats.clone();
            let read = SqlitePoolOptions::new()
                .max_connections(8)
                .before_acquire(move |_, meta| {
                    let fresh = !clock.predates(meta.age);
                    Box::pin(async move { Ok(fresh) })
                })
                .connect_with(opts.read_only(true))
                .await
                .map_err(|e| {
                    StoreError::Connect(format!("cannot open SQLite database {url}: {e}"))
                })?;
            Ok(Pools::Sqlite { write, read, stats })
        } else {
            Err(StoreError::Config(format!(
                "unsupported database URL {:?}: use sqlite://PATH or postgres://...",
                redact_url(url)
            )))
        }
    }

    /// Refreshes the query planner's statistics where the engine leaves that to the application.
    /// SQLite plans with `sqlite_stat1`, which only ANALYZE writes: without it a filter on a rare
    /// label scans the whole backlog in rank order instead of starting from the label index.
    /// `PRAGMA optimize` re-analyzes only tables that never were or that changed size a lot, so
    /// it is cheap to call often; a full ANALYZE of 100k items takes about 0.1 s. (A sampling
    /// `analysis_limit` was tried: it caps distinct counts, so `project_id = ?` looked as selective
    /// as a label and the planner kept the slow scan.) PostgreSQL's autovacuum keeps its own.
    pub(crate) async fn optimize(&self) -> Result<(), StoreError> {
        if let Pools::Sqlite { write, stats, .. } = self {
            let mut c = write.acquire().await?;
            // 0x1 lists what would be analyzed without doing it: read connections are retired
            // only when the statistics really change.
            let due = sqlx::query("PRAGMA optimize = 0x10003")
                .fetch_all(&mut *c)
                .await?;
            if !due.is_empty() {
                sqlx::query("PRAGMA optimize = 0x10002")
                    .execute(&mut *c)
                    .await?;
                stats.mark();
            }
        }
        Ok(())
    }

    pub(crate) fn backend(&self) -> Backend {
        match self {
            Pools::Sqlite { .. } => Backend::Sqlite,
            Pools::Postgres(_) => Backend::Postgres,
        }
    }

    pub(crate) async fn begin(&self) -> Result<TxInner, StoreError> {
        Ok(match self {
            Pools::Sqlite { write, .. } => {
                TxInner::Sqlite(write.begin_with("BEGIN IMMEDIATE").await?)
            }
            Pools::Postgres(p) => TxInner::Postgres(p.begin().await?),
        })
    }

    /// [`Pools::begin`], then `stmt` with `$1` = `id`. On PostgreSQL both go in one simple-query
    /// message (one round trip), with `id` written into the text: it is an integer, so it cannot
    /// carry SQL, and the text is not prepared, so varying ids cost no statement cache entries.
    pub(crate) async fn begin_then(
        &self,
        stmt: &'static str,
        id: i64,
    ) -> Result<TxInner, StoreError> {
        match self {
            Pools::Sqlite { .. } => {
                let mut tx = self.begin().await?;
                q(stmt).bind(id).execute(&mut tx).await?;
                Ok(tx)
            }
            Pools::Postgres(p) => {
                let sql = format!("BEGIN; {}", stmt.replace("$1", &id.to_string()));
                Ok(TxInner::Postgres(p.begin_with(AssertSqlSafe(sql)).await?))
            }
        }
    }

    pub(crate) async fn read(&self) -> Result<Conn, StoreError> {
        Ok(match self {
            Pools::Sqlite { read, .. } => Conn::Sqlite(read.acquire().await?),
            Pools::Postgres(p) => Conn::Postgres(p.acquire().await?),
        })
    }

    pub(crate) fn stats(&self) -> PoolStats {
        match self {
            Pools::Sqlite { write, read, .. } => PoolStats {
                size: write.size() + read.size(),
                idle: (write.num_idle() + read.num_idle()) as u32,
            },
            Pools::Postgres(p) => PoolStats {
                size: p.size(),
                idle: p.num_idle() as u32,
            },
        }
    }

    pub(crate) async fn close(&self) {
        match self {
            Pools::Sqlite { write, read, .. } => {
                read.close().await;
                write.close().await;
            }
            Pools::Postgres(p) => p.close().await,
        }
    }
}

/// Hides the password of a URL for messages and `Debug`.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((cred, host)) = rest.rsplit_once('@')
    {
        let user = cred.split(':').next().unwrap_or("");
        return format!("{scheme}://{user}:***@{host}");
    }
    url.to_string()
}

pub(crate) enum TxInner {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

/// A pooled read connection.
pub enum Conn {
    Sqlite(sqlx::pool::PoolConnection<Sqlite>),
    Postgres(sqlx::pool::PoolConnection<Postgres>),
}

/// Something queries run on: a transaction or a read connection.
pub trait Executor: Send {
    #[doc(hidden)]
    fn raw(&mut self) -> RawConn<'_>;

    /// The engine behind this executor, for the rare statement whose best shape differs.
    fn backend(&mut self) -> Backend {
        match self.raw() {
            RawConn::Sqlite(_) => Backend::Sqlite,
            RawConn::Postgres(_) => Backend::Postgres,
        }
    }
}

#[doc(hidden)]
pub enum RawConn<'a> {
    Sqlite(&'a mut SqliteConnection),
    Postgres(&'a mut PgConnection),
}

impl Executor for Conn {
    fn raw(&mut self) -> RawConn<'_> {
        match self {
            Conn::Sqlite(c) => RawConn::Sqlite(c),
            Conn::Postgres(c) => RawConn::Postgres(c),
        }
    }
}

impl Executor for TxInner {
    fn raw(&mut self) -> RawConn<'_> {
        match self {
            TxInner::Sqlite(t) => RawConn::Sqlite(t),
            TxInner::Postgres(t) => RawConn::Postgres(t),
        }
    }
}

/// Placeholders for statements whose parameter count grows with the data (multi-row INSERTs,
/// `IN` lists): `?` on SQLite, `$1`, `$2`, ... on PostgreSQL, numbered in the order they are
/// asked for. SQLite gets anonymous ones because sqlx binds a numbered placeholder by asking
/// SQLite for its name, a linear search over all of the statement's names: binding is then
/// quadratic in the parameter count (a 2,000-parameter INSERT spent more time there than in
/// SQLite itself). Build the whole statement with one `Placeholders`, in text order.
#[derive(Debug, Clone)]
pub struct Placeholders {
    backend: Backend,
    next: usize,
}

impl Placeholders {
    pub fn new(backend: Backend) -> Self {
        Self { backend, next: 0 }
    }

    /// The next placeholder.
    pub fn one(&mut self) -> String {
        self.next += 1;
        match self.backend {
            Backend::Sqlite => "?".to_string(),
            Backend::Postgres => format!("${}", self.next),
        }
    }

    /// `n` placeholders separated by commas (an `IN` list).
    pub fn list(&mut self, n: usize) -> String {
        let mut out = String::with_capacity(n * 4);
        for i in 0..n {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(&self.one());
        }
        out
    }

    /// `rows` parenthesised rows of `cols` placeholders (a multi-row `VALUES`).
    pub fn rows(&mut self, rows: usize, cols: usize) -> String {
        let mut out = String::with_capacity(rows * (cols * 4 + 4));
        for r in 0..rows {
            if r > 0 {
                out.push_str(", ");
            }
            out.push('(');
            out.push_str(&self.list(cols));
            out.push(')');
        }
        out
    }
}

/// Sizes of the statements that write `n` rows in batches of at most `batch`: full batches,
/// then the rest split into powers of two. Every statement then has one of a few fixed shapes,
/// so the per-connection statement cache reuses them instead of preparing a new odd-sized
/// statement for each call.
pub fn batch_sizes(n: usize, batch: usize) -> Vec<usize> {
    let batch = batch.max(1);
    let mut out = vec![batch; n / batch];
    let mut rest = n % batch;
    while rest > 0 {
        let p = 1usize << (usize::BITS - 1 - rest.leading_zeros());
        out.push(p);
        rest -= p;
    }
    out
}

/// A bound query parameter.
#[derive(Debug, Clone)]
pub enum Arg {
    NullI64,
    NullText,
    I64(i64),
    Bool(bool),
    Text(String),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::I64(v)
    }
}
impl From<bool> for Arg {
    fn from(v: bool) -> Self {
        Arg::Bool(v)
    }
}
impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(v.to_string())
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(v)
    }
}
impl From<&String> for Arg {
    fn from(v: &String) -> Self {
        Arg::Text(v.clone())
    }
}
// A NULL must carry its type: PostgreSQL checks `$4 IS NULL OR col LIKE $4` against it.
impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        v.map(Arg::I64).unwrap_or(Arg::NullI64)
    }
}
impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        v.map(Arg::Text).unwrap_or(Arg::NullText)
    }
}
impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Self {
        v.map(|s| Arg::Text(s.to_string())).unwrap_or(Arg::NullText)
    }
}

/// A value read from a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    I64(i64),
    F64(f64),
    Text(String),
}

/// A result row, decoded eagerly into portable values so callers never see engine types.
#[derive(Debug, Clone)]
pub struct Row {
    /// Shared by all rows of one result: a page of thousands of rows allocates them once.
    names: Arc<[String]>,
    values: Vec<Value>,
}

impl Row {
    fn value(&self, name: &str) -> Result<&Value, StoreError> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| &self.values[i])
            .ok_or_else(|| StoreError::Decode(format!("no column {name}")))
    }

    pub fn i64(&self, name: &str) -> Result<i64, StoreError> {
        match self.value(name)? {
            Value::I64(v) => Ok(*v),
            v => Err(StoreError::Decode(format!(
                "column {name}: expected integer, got {v:?}"
            ))),
        }
    }

    pub fn opt_i64(&self, name: &str) -> Result<Option<i64>, StoreError> {
        match self.value(name)? {
            Value::Null => Ok(None),
            _ => self.i64(name).map(Some),
        }
    }

    pub fn bool(&self, name: &str) -> Result<bool, StoreError> {
        self.i64(name).map(|v| v != 0)
    }

    pub fn text(&self, name: &str) -> Result<String, StoreError> {
        match self.value(name)? {
            Value::Text(v) => Ok(v.clone()),
            v => Err(StoreError::Decode(format!(
                "column {name}: expected text, got {v:?}"
            ))),
        }
    }

    pub fn opt_text(&self, name: &str) -> Result<Option<String>, StoreError> {
        match self.value(name)? {
            Value::Null => Ok(None),
            _ => self.text(name).map(Some),
        }
    }
}

/// The column names of `r`, reused from `names` while the result's columns stay the same.
fn names_of<R: sqlx::Row>(r: &R, names: &mut Option<Arc<[String]>>) -> Arc<[String]> {
    let cols = r.columns();
    if let Some(n) = names
        && n.len() == cols.len()
        && n.iter().zip(cols).all(|(a, c)| a == c.name())
    {
        return n.clone();
    }
    let fresh: Arc<[String]> = cols.iter().map(|c| c.name().to_string()).collect();
    *names = Some(fresh.clone());
    fresh
}

fn decode_sqlite(
    r: &sqlx::sqlite::SqliteRow,
    names: &mut Option<Arc<[String]>>,
) -> Result<Row, StoreError> {
    let mut cols = Vec::with_capacity(r.len());
    for i in 0..r.len() {
        let raw = r.try_get_raw(i)?;
        let v = if sqlx::ValueRef::is_null(&raw) {
            Value::Null
        } else {
            match sqlx::ValueRef::type_info(&raw).name() {
                "INTEGER" | "BOOLEAN" | "BIGINT" | "INT8" => Value::I64(r.try_get(i)?),
                "REAL" => Value::F64(r.try_get(i)?),
                _ => Value::Text(r.try_get(i)?),
            }
        };
        cols.push(v);
    }
    Ok(Row {
        names: names_of(r, names),
        values: cols,
    })
}

fn decode_pg(
    r: &sqlx::postgres::PgRow,
    names: &mut Option<Arc<[String]>>,
) -> Result<Row, StoreError> {
    let mut cols = Vec::with_capacity(r.len());
    for (i, c) in r.columns().iter().enumerate() {
        let raw = r.try_get_raw(i)?;
        let v = if sqlx::ValueRef::is_null(&raw) {
            Value::Null
        } else {
            match c.type_info().name() {
                "INT8" => Value::I64(r.try_get(i)?),
                "INT4" => Value::I64(r.try_get::<i32, _>(i)? as i64),
                "INT2" => Value::I64(r.try_get::<i16, _>(i)? as i64),
                "BOOL" => Value::I64(r.try_get::<bool, _>(i)? as i64),
                "FLOAT8" => Value::F64(r.try_get(i)?),
                "FLOAT4" => Value::F64(r.try_get::<f32, _>(i)? as f64),
                _ => Value::Text(r.try_get(i)?),
            }
        };
        cols.push(v);
    }
    Ok(Row {
        names: names_of(r, names),
        values: cols,
    })
}

/// A query: SQL written once for both engines, plus its parameters.
#[must_use]
pub struct Q {
    sql: String,
    args: Vec<Arg>,
    prepared: bool,
}

/// Starts a query. Use `$1`, `$2`, ... placeholders.
pub fn q(sql: impl Into<String>) -> Q {
    Q {
        sql: sql.into(),
        args: Vec::new(),
        prepared: true,
    }
}

macro_rules! bind_all {
    ($query:expr, $args:expr) => {{
        let mut query = $query;
        for a in $args {
            query = match a {
                Arg::NullI64 => query.bind(None::<i64>),
                Arg::NullText => query.bind(None::<String>),
                Arg::I64(v) => query.bind(v),
                Arg::Bool(v) => query.bind(v),
                Arg::Text(v) => query.bind(v),
            };
        }
        query
    }};
}

impl Q {
    /// How many parameters are bound so far.
    pub(crate) fn arg_count(&self) -> usize {
        self.args.len()
    }

    /// The same parameters under a statement built around this one's text.
    pub(crate) fn wrap(self, f: impl FnOnce(&str) -> String) -> Q {
        Q {
            sql: f(&self.sql),
            ..self
        }
    }

    pub fn bind(mut self, a: impl Into<Arg>) -> Q {
        self.args.push(a.into());
        self
    }

    /// Plans the statement with this run's values instead of keeping it prepared. sqlx keeps
    /// statements prepared per connection, and after five runs PostgreSQL may switch one to a
    /// generic plan that ignores the values. That suits lookups by key, not the item query
    /// language, whose best plan depends on them: the generic plan scanned the whole project
    /// in rank order (54 ms instead of 12 ms at 100k items, 430 ms for a 2,000-card board).
    pub fn plan_each_run(mut self) -> Self {
        self.prepared = false;
        self
    }

    /// PostgreSQL cannot store NUL in text and answers with an error; SQLite would store it.
    /// Refusing it here, for both, keeps behaviour identical and turns it into a 422, not a 500.
    fn check_args(&self) -> Result<(), StoreError> {
        refuse_nul(&self.args)
    }

    pub async fn fetch_all(self, ex: &mut impl Executor) -> Result<Vec<Row>, StoreError> {
        self.check_args()?;
        match ex.raw() {
            RawConn::Sqlite(c) => {
                let q = bind_all!(sqlx::query::<Sqlite>(AssertSqlSafe(self.sql)), self.args)
                    .persistent(self.prepared);
                let mut names = None;
                let mut out = Vec::new();
                // Decoded as they arrive: the engine rows are dropped one by one, never all held.
                let mut rows = q.fetch(c);
                while let Some(r) = rows.try_next().await? {
                    out.push(decode_sqlite(&r, &mut names)?);
                }
                Ok(out)
            }
            RawConn::Postgres(c) => {
                let q = bind_all!(sqlx::query::<Postgres>(AssertSqlSafe(self.sql)), self.args)
                    .persistent(self.prepared);
                let mut names = None;
                let mut out = Vec::new();
                let mut rows = q.fetch(c);
                while let Some(r) = rows.try_next().await? {
                    out.push(decode_pg(&r, &mut names)?);
                }
                Ok(out)
            }
        }
    }

    pub async fn fetch_optional(self, ex: &mut impl Executor) -> Result<Option<Row>, StoreError> {
        Ok(self.fetch_all(ex).await?.into_iter().next())
    }

    pub async fn fetch_one(self, ex: &mut impl Executor) -> Result<Row, StoreError> {
        self.fetch_optional(ex)
            .await?
            .ok_or_else(|| StoreError::Decode("query returned no row".into()))
    }

    /// Runs the statement and returns the number of rows it changed.
    pub async fn execute(self, ex: &mut impl Executor) -> Result<u64, StoreError> {
        self.check_args()?;
        match ex.raw() {
            RawConn::Sqlite(c) => {
                let q = bind_all!(sqlx::query::<Sqlite>(AssertSqlSafe(self.sql)), self.args);
                Ok(q.execute(c).await?.rows_affected())
            }
            RawConn::Postgres(c) => {
                let q = bind_all!(sqlx::query::<Postgres>(AssertSqlSafe(self.sql)), self.args);
                Ok(q.execute(c).await?.rows_affected())
            }
        }
    }
}

/// Inserts many rows into `table`: `values` holds one value per column of `columns`, row after
/// row. PostgreSQL gets them through `COPY ... FROM STDIN` (text format, sent in 1 MiB pieces):
/// no statement to parse per batch and no parameters to bind (the 100,000-case test report's
/// ingest went from 2.1 to 1.7 s). SQLite, whose INSERT costs no round trip, gets
/// multi-row INSERTs of at most `batch` rows in a few fixed shapes ([`batch_sizes`]). Returns
/// the number of rows written. Text with NUL is refused as by [`Q`].
pub async fn insert_rows(
    ex: &mut impl Executor,
    table: &str,
    columns: &[&str],
    values: Vec<Arg>,
    batch: usize,
) -> Result<u64, StoreError> {
    let width = columns.len();
    if width == 0 || !values.len().is_multiple_of(width) {
        return Err(StoreError::Decode(format!(
            "insert into {table}: {} values do not fill rows of {width} columns",
            values.len()
        )));
    }
    refuse_nul(&values)?;
    let rows = values.len() / width;
    if let RawConn::Postgres(c) = ex.raw() {
        {
            let mut copy = c
                .copy_in_raw(&format!("COPY {table} ({}) FROM STDIN", columns.join(", ")))
                .await?;
            let mut buf: Vec<u8> = Vec::with_capacity(COPY_CHUNK + 4096);
            for (i, v) in values.iter().enumerate() {
                copy_value(v, &mut buf);
                if i % width + 1 == width {
                    buf.push(b'\n');
                    if buf.len() >= COPY_CHUNK {
                        copy.send(std::mem::take(&mut buf)).await?;
                    }
                } else {
                    buf.push(b'\t');
                }
            }
            if !buf.is_empty() {
                copy.send(buf).await?;
            }
            return Ok(copy.finish().await?);
        }
    }
    let mut written = 0;
    let mut rest = values.into_iter();
    for size in batch_sizes(rows, batch) {
        let mut ph = Placeholders::new(Backend::Sqlite);
        let mut stmt = q(format!(
            "INSERT INTO {table} ({}) VALUES {}",
            columns.join(", "),
            ph.rows(size, width)
        ));
        stmt.args.extend(rest.by_ref().take(size * width));
        written += stmt.execute(&mut *ex).await?;
    }
    Ok(written)
}

fn refuse_nul(values: &[Arg]) -> Result<(), StoreError> {
    if values
        .iter()
        .any(|a| matches!(a, Arg::Text(t) if t.contains('\0')))
    {
        return Err(StoreError::Domain(ouro_core::OuroError::new(
            ouro_core::ErrorCode::ValidationFailed,
            "text must not contain NUL characters",
        )));
    }
    Ok(())
}

/// How much COPY data is gathered before it is sent.
const COPY_CHUNK: usize = 1 << 20;

/// One value in COPY's text format: `\N` for NULL; backslash, tab, newline and carriage return
/// escaped in text.
fn copy_value(v: &Arg, out: &mut Vec<u8>) {
    use std::io::Write as _;
    match v {
        Arg::NullI64 | Arg::NullText => out.extend_from_slice(b"\\N"),
        Arg::I64(n) => {
            let _ = write!(out, "{n}");
        }
        Arg::Bool(b) => out.push(if *b { b't' } else { b'f' }),
        Arg::Text(t) => {
            for &b in t.as_bytes() {
                match b {
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    b'\t' => out.extend_from_slice(b"\\t"),
                    b'\n' => out.extend_from_slice(b"\\n"),
                    b'\r' => out.extend_from_slice(b"\\r"),
                    _ => out.push(b),
                }
            }
        }
    }
}

/// Runs a script of several statements (migrations).
pub(crate) async fn run_script(ex: &mut impl Executor, sql: &str) -> Result<(), StoreError> {
    match ex.raw() {
        RawConn::Sqlite(c) => {
            sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
                .execute(c)
                .await?;
        }
        RawConn::Postgres(c) => {
            sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
                .execute(c)
                .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_sizes_are_full_batches_then_powers_of_two() {
        assert_eq!(batch_sizes(0, 500), Vec::<usize>::new());
        assert_eq!(batch_sizes(1, 500), vec![1]);
        assert_eq!(batch_sizes(500, 500), vec![500]);
        assert_eq!(batch_sizes(501, 500), vec![500, 1]);
        assert_eq!(batch_sizes(1237, 500), vec![500, 500, 128, 64, 32, 8, 4, 1]);
        for n in 0..2_000 {
            let s = batch_sizes(n, 300);
            assert_eq!(s.iter().sum::<usize>(), n);
            assert!(
                s.iter()
                    .all(|b| *b == 300 || (b.is_power_of_two() && *b < 300))
            );
        }
    }

    #[test]
    fn placeholders_are_anonymous_on_sqlite_and_numbered_on_postgres() {
        let mut p = Placeholders::new(Backend::Sqlite);
        assert_eq!(p.one(), "?");
        assert_eq!(p.rows(2, 2), "(?, ?), (?, ?)");
        let mut p = Placeholders::new(Backend::Postgres);
        assert_eq!(p.one(), "$1");
        assert_eq!(p.rows(2, 2), "($2, $3), ($4, $5)");
        assert_eq!(p.list(2), "$6, $7");
    }
}
