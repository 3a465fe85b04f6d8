//! The roadmap: epics and features on a timeline, from their creation to their target date,
//! with progress counted from their children (an epic: every item in it; a feature: its direct
//! children). Two queries: the epics and features, and one grouped count.

use ouro_store::{Executor, StoreError, q};
use schemars::JsonSchema;
use serde::Serialize;

use crate::workflow::Category;

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Progress {
    pub done: i64,
    pub total: i64,
    pub done_points: i64,
    pub points: i64,
    /// Done children in percent (0 without children).
    pub percent: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Entry {
    pub key: String,
    pub title: String,
    /// `epic` or `feature`.
    pub kind: String,
    pub state: String,
    pub state_category: Category,
    #[serde(serialize_with = "ouro_core::time::serde_ms::serialize")]
    #[schemars(with = "String")]
    pub start_at: i64,
    #[serde(serialize_with = "ouro_core::time::serde_ms_opt::serialize")]
    #[schemars(with = "Option<String>")]
    pub target_at: Option<i64>,
    pub progress: Progress,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Roadmap {
    /// Entries with a target date, earliest first.
    pub dated: Vec<Entry>,
    /// Entries without a target date, in rank order.
    pub undated: Vec<Entry>,
}

pub async fn roadmap(ex: &mut impl Executor, project_id: i64) -> Result<Roadmap, StoreError> {
    let rows = q("SELECT i.id, i.key, i.title, i.state, i.state_category, i.created_at, \
                  i.target_at, t.kind FROM items i JOIN item_types t ON t.project_id = i.project_id \
                  AND t.name = i.type WHERE i.project_id = $1 AND t.kind IN ('epic', 'feature') \
                  ORDER BY i.rank")
    .bind(project_id)
    .fetch_all(&mut *ex)
    .await?;
    // Per parent: children through parent_id (features) and members through epic_id (epics).
    let counts = q("SELECT c.pid, c.via, COUNT(*) AS n, \
                    CAST(SUM(CASE WHEN c.state_category = 'done' THEN 1 ELSE 0 END) AS BIGINT) AS d, \
                    CAST(SUM(COALESCE(c.estimate, 0)) AS BIGINT) AS pts, \
                    CAST(SUM(CASE WHEN c.state_category = 'done' THEN COALESCE(c.estimate, 0) ELSE 0 END) AS BIGINT) AS dpts \
                    FROM (SELECT parent_id AS pid, CAST('parent' AS TEXT) AS via, state_category, estimate FROM items \
                          WHERE project_id = $1 AND parent_id IS NOT NULL \
                          UNION ALL SELECT epic_id AS pid, CAST('epic' AS TEXT) AS via, state_category, estimate FROM items \
                          WHERE project_id = $1 AND epic_id IS NOT NULL) c GROUP BY c.pid, c.via")
    .bind(project_id)
    .fetch_all(&mut *ex)
    .await?;
    let mut out = Roadmap {
        dated: vec![],
        undated: vec![],
    };
    for r in &rows {
        let id = r.i64("id")?;
        let kind = r.text("kind")?;
        let via = if kind == "epic" { "epic" } else { "parent" };
        let mut p = Progress {
            done: 0,
            total: 0,
            done_points: 0,
            points: 0,
            percent: 0,
        };
        for c in &counts {
            if c.i64("pid")? == id && c.text("via")? == via {
                p.total = c.i64("n")?;
                p.done = c.i64("d")?;
                p.points = c.i64("pts")?;
                p.done_points = c.i64("dpts")?;
            }
        }
        if p.total > 0 {
            p.percent = p.done * 100 / p.total;
        }
        let cat = r.text("state_category")?;
        let e = Entry {
            key: r.text("key")?,
            title: r.text("title")?,
            kind,
            state: r.text("state")?,
            state_category: Category::parse(&cat).unwrap_or(Category::Todo),
            start_at: r.i64("created_at")?,
            target_at: r.opt_i64("target_at")?,
            progress: p,
        };
        if e.target_at.is_some() {
            out.dated.push(e);
        } else {
            out.undated.push(e);
        }
    }
    out.dated.sort_by_key(|e| e.target_at);
    Ok(out)
}
