//! The event ledger: append (inside a [`crate::Tx`]), read in order, and consumer cursors.

use ouro_core::events::Subject;
use ouro_core::{Event, NewEvent};

use crate::db::{Executor, Q, Row, q};
use crate::{PageReq, StoreError};

/// Inserts one event and returns its sequence number. With `take_lock` (PostgreSQL only) the
/// ledger lock (the one [`crate::Tx`] takes, 7070) is taken by the same statement, before the
/// sequence value is drawn: the row comes out of the lock's subquery, so `nextval` runs only
/// once the lock is held. That saves the lock's own round trip on every write that appends one
/// event.
pub(crate) async fn insert(
    ex: &mut impl Executor,
    ev: &NewEvent,
    take_lock: bool,
) -> Result<i64, StoreError> {
    bind_event(q(insert_sql("", 1, take_lock)), ev)
        .fetch_one(ex)
        .await?
        .i64("seq")
}

/// [`insert`] preceded by `write` in the same statement (PostgreSQL: a data-modifying WITH).
pub(crate) async fn insert_after(
    ex: &mut impl Executor,
    write: Q,
    ev: &NewEvent,
    take_lock: bool,
) -> Result<i64, StoreError> {
    let first = write.arg_count() + 1;
    let stmt = write.wrap(|w| insert_sql(&format!("prior_write AS ({w})"), first, take_lock));
    bind_event(stmt, ev).fetch_one(ex).await?.i64("seq")
}

/// The one-event INSERT, its parameters numbered from `first`, after the WITH item `with`
/// (empty for none).
fn insert_sql(with: &str, first: usize, take_lock: bool) -> String {
    let params: Vec<String> = (first..first + 10).map(|n| format!("${n}")).collect();
    let params = params.join(", ");
    let cols = "INSERT INTO events (time, project_id, project, actor, actor_user_id, kind, \
                schema_version, subject_type, subject_id, payload)";
    let mut ctes: Vec<String> = Vec::new();
    if !with.is_empty() {
        ctes.push(with.to_string());
    }
    if take_lock {
        // MATERIALIZED keeps the lock call a step of its own that the row is read from.
        ctes.push(
            "ledger_lock AS MATERIALIZED (SELECT pg_advisory_xact_lock(7070) IS NULL AS l)".into(),
        );
    }
    let with = if ctes.is_empty() {
        String::new()
    } else {
        format!("WITH {} ", ctes.join(", "))
    };
    if take_lock {
        format!("{with}{cols} SELECT {params} FROM ledger_lock RETURNING seq")
    } else {
        format!("{with}{cols} VALUES ({params}) RETURNING seq")
    }
}

fn bind_event(stmt: Q, ev: &NewEvent) -> Q {
    stmt.bind(ouro_core::time::now_ms())
        .bind(ev.project.as_ref().map(|p| p.0))
        .bind(ev.project.as_ref().map(|p| p.1.clone()))
        .bind(ev.actor.label())
        .bind(ev.actor.user_id())
        .bind(ev.kind.name)
        .bind(ev.kind.schema_version as i64)
        .bind(ev.kind.subject)
        .bind(&ev.subject_id)
        .bind(ev.payload.to_string())
}

/// Events per multi-row INSERT in [`insert_all`] (10 parameters each).
const INSERT_BATCH: usize = 500;

/// Inserts `evs` in order with multi-row INSERTs and returns the highest sequence number given
/// (`None` for no events). Sequence numbers follow the order of `evs`: both engines assign
/// them row by row in VALUES order.
pub(crate) async fn insert_all(
    ex: &mut impl Executor,
    evs: &[NewEvent],
) -> Result<Option<i64>, StoreError> {
    let backend = ex.backend();
    let now = ouro_core::time::now_ms();
    let mut last = None;
    let mut rest = evs;
    for size in crate::db::batch_sizes(evs.len(), INSERT_BATCH) {
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        let mut ph = crate::db::Placeholders::new(backend);
        let mut stmt = q(format!(
            "INSERT INTO events (time, project_id, project, actor, actor_user_id, kind, \
             schema_version, subject_type, subject_id, payload) VALUES {} RETURNING seq",
            ph.rows(chunk.len(), 10)
        ));
        for ev in chunk {
            stmt = stmt
                .bind(now)
                .bind(ev.project.as_ref().map(|p| p.0))
                .bind(ev.project.as_ref().map(|p| p.1.clone()))
                .bind(ev.actor.label())
                .bind(ev.actor.user_id())
                .bind(ev.kind.name)
                .bind(ev.kind.schema_version as i64)
                .bind(ev.kind.subject)
                .bind(&ev.subject_id)
                .bind(ev.payload.to_string());
        }
        for r in stmt.fetch_all(ex).await? {
            let seq = r.i64("seq")?;
            last = Some(last.map_or(seq, |l: i64| l.max(seq)));
        }
    }
    Ok(last)
}

pub(crate) async fn latest_seq(ex: &mut impl Executor) -> Result<i64, StoreError> {
    q("SELECT COALESCE(MAX(seq), 0) AS seq FROM events")
        .fetch_one(ex)
        .await?
        .i64("seq")
}

fn from_row(r: &Row) -> Result<Event, StoreError> {
    Ok(Event {
        seq: r.i64("seq")?,
        time: r.i64("time")?,
        project: r.opt_text("project")?,
        project_id: r.opt_i64("project_id")?,
        actor: r.text("actor")?,
        kind: r.text("kind")?,
        schema_version: r.i64("schema_version")? as u32,
        subject: Subject {
            kind: r.text("subject_type")?,
            id: r.text("subject_id")?,
        },
        payload: serde_json::from_str(&r.text("payload")?).unwrap_or(serde_json::Value::Null),
    })
}

/// Which events a reader may see.
#[derive(Debug, Clone)]
pub enum Visibility {
    /// Everything (instance admins, internal consumers).
    All,
    /// Only events of these projects.
    Projects(Vec<i64>),
}

/// Filters for listing events.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub project_id: Option<i64>,
    /// A kind pattern: `*`, `project.*` or an exact name.
    pub kind: Option<String>,
}

/// Events after `page.after` in sequence order.
pub async fn list(
    ex: &mut impl Executor,
    vis: &Visibility,
    filter: &EventFilter,
    page: PageReq,
) -> Result<crate::Page<Event>, StoreError> {
    let mut sql = String::from("SELECT * FROM events WHERE seq > $1");
    let mut args: Vec<crate::db::Arg> = vec![page.after.into()];
    if let Visibility::Projects(ids) = vis {
        if ids.is_empty() {
            return Ok(crate::Page {
                items: vec![],
                next_cursor: None,
            });
        }
        // Ids are integers from our own tables, so inlining them is safe and keeps one statement.
        let list: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        sql.push_str(&format!(" AND project_id IN ({})", list.join(",")));
    }
    if let Some(p) = filter.project_id {
        args.push(p.into());
        sql.push_str(&format!(" AND project_id = ${}", args.len()));
    }
    if let Some(k) = filter.kind.as_deref().filter(|k| *k != "*") {
        if let Some(prefix) = k.strip_suffix(".*") {
            args.push(format!("{prefix}.%").into());
            sql.push_str(&format!(" AND kind LIKE ${}", args.len()));
        } else {
            args.push(k.into());
            sql.push_str(&format!(" AND kind = ${}", args.len()));
        }
    }
    args.push((page.limit + 1).into());
    sql.push_str(&format!(" ORDER BY seq LIMIT ${}", args.len()));
    let mut query = q(sql);
    for a in args {
        query = query.bind(a);
    }
    let rows = query.fetch_all(ex).await?;
    let items = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    Ok(page.finish(items, |e| e.seq))
}

/// Events about one subject, oldest first (a record's history).
pub async fn for_subject(
    ex: &mut impl Executor,
    subject_type: &str,
    subject_id: &str,
    limit: i64,
) -> Result<Vec<Event>, StoreError> {
    q("SELECT * FROM events WHERE subject_type = $1 AND subject_id = $2 ORDER BY seq DESC LIMIT $3")
        .bind(subject_type)
        .bind(subject_id)
        .bind(limit)
        .fetch_all(ex)
        .await?
        .iter()
        .rev()
        .map(from_row)
        .collect()
}

pub async fn get(ex: &mut impl Executor, seq: i64) -> Result<Option<Event>, StoreError> {
    q("SELECT * FROM events WHERE seq = $1")
        .bind(seq)
        .fetch_optional(ex)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// The stored position of a consumer (0 when it never ran).
pub async fn cursor(ex: &mut impl Executor, consumer: &str) -> Result<i64, StoreError> {
    Ok(q("SELECT seq FROM consumer_cursors WHERE name = $1")
        .bind(consumer)
        .fetch_optional(ex)
        .await?
        .map(|r| r.i64("seq"))
        .transpose()?
        .unwrap_or(0))
}

/// Moves a consumer's cursor forward (never back).
pub async fn set_cursor(
    ex: &mut impl Executor,
    consumer: &str,
    seq: i64,
) -> Result<(), StoreError> {
    q(
        "INSERT INTO consumer_cursors (name, seq, updated_at) VALUES ($1, $2, $3) \
       ON CONFLICT (name) DO UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at \
       WHERE consumer_cursors.seq < excluded.seq",
    )
    .bind(consumer)
    .bind(seq)
    .bind(ouro_core::time::now_ms())
    .execute(ex)
    .await?;
    Ok(())
}

/// The newest `limit` events of a project, newest first (activity feeds).
pub async fn recent(
    ex: &mut impl Executor,
    project_id: i64,
    limit: i64,
) -> Result<Vec<Event>, StoreError> {
    q("SELECT * FROM events WHERE project_id = $1 ORDER BY seq DESC LIMIT $2")
        .bind(project_id)
        .bind(limit)
        .fetch_all(ex)
        .await?
        .iter()
        .map(from_row)
        .collect()
}
