//! Reading the ledger: a paged list, a per-project list, the table of kinds, and a live stream
//! (Server-Sent Events) that resumes from `Last-Event-ID`.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, Method};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use ouro_core::events::{EventKind, KINDS};
use ouro_core::{ErrorCode, Event, OuroError, Permission, Role};
use ouro_store::events::{self, EventFilter, Visibility};
use ouro_store::{Page, PageReq};
use serde::Deserialize;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Ctx, Json, Query};
use crate::registry::Registry;

pub fn register(reg: &mut Registry) {
    reg.route(
        Method::GET,
        "/api/v1/events",
        Permission::Authenticated,
        list,
    )
    .doc("events", "Events you may see, in ledger order")
    .query(
        "after",
        "Only events with seq greater than this (same as cursor)",
    )
    .query("limit", "Page size, 1 to 500 (default 50)")
    .query("cursor", "next_cursor of the previous page")
    .query("project", "Only this project's events (slug)")
    .query(
        "kind",
        "A kind (project.created) or a prefix pattern (project.*)",
    )
    .response::<Page<Event>>(200);
    reg.route(
        Method::GET,
        "/api/v1/events/stream",
        Permission::Authenticated,
        stream,
    )
    .doc(
        "events",
        "Live events as Server-Sent Events; reconnect with Last-Event-ID to resume",
    )
    .query(
        "after",
        "Start after this seq (Last-Event-ID wins when both are given)",
    )
    .query("project", "Only this project's events (slug)")
    .query("kind", "A kind or a prefix pattern");
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/events",
        Permission::Project(Role::Viewer),
        project_events,
    )
    .doc("events", "A project's events, in ledger order")
    .query("after", "Only events with seq greater than this")
    .query("limit", "Page size, 1 to 500 (default 50)")
    .query("kind", "A kind or a prefix pattern")
    .response::<Page<Event>>(200);
    reg.route(
        Method::GET,
        "/api/v1/event-kinds",
        Permission::Public,
        kinds,
    )
    .doc(
        "events",
        "Every event kind: name, phase, schema version, subject type",
    );
}

#[derive(Debug, Deserialize)]
pub struct EventQuery {
    after: Option<i64>,
    limit: Option<i64>,
    cursor: Option<String>,
    project: Option<String>,
    kind: Option<String>,
}

fn invalid(msg: &str) -> ApiError {
    ApiError(OuroError::new(ErrorCode::InvalidQuery, msg))
}

impl EventQuery {
    fn page(&self) -> Result<PageReq, ApiError> {
        let cursor = match self.cursor.as_deref() {
            None | Some("") => None,
            Some(c) => Some(
                c.parse::<i64>()
                    .map_err(|_| invalid("invalid cursor: pass back next_cursor as given"))?,
            ),
        };
        if let Some(l) = self.limit
            && !(1..=ouro_store::page::MAX_LIMIT).contains(&l)
        {
            return Err(invalid("limit must be 1 to 500"));
        }
        Ok(PageReq::new(cursor.or(self.after).unwrap_or(0), self.limit))
    }

    fn kind_filter(&self) -> Result<Option<String>, ApiError> {
        match self.kind.as_deref() {
            None | Some("") => Ok(None),
            Some(k)
                if k.len() <= 100
                    && k.chars()
                        .all(|c| c.is_ascii_lowercase() || c == '.' || c == '_' || c == '*') =>
            {
                Ok(Some(k.to_string()))
            }
            Some(_) => Err(invalid(
                "kind must be an event kind such as project.created, or a pattern such as project.*",
            )),
        }
    }
}

/// The events the caller may see, and the filter asked for.
async fn scope(
    st: &AppState,
    ctx: &Ctx,
    q: &EventQuery,
) -> Result<(Visibility, EventFilter), ApiError> {
    let user = ctx.user()?;
    let mut conn = st.store.read().await?;
    let vis = if user.is_admin {
        Visibility::All
    } else {
        Visibility::Projects(ouro_store::projects::visible_ids(&mut conn, Some(user)).await?)
    };
    let project_id = match q.project.as_deref() {
        None | Some("") => None,
        Some(slug) => {
            let (p, _) = ouro_store::projects::access(&mut conn, slug, Some(user))
                .await?
                .ok_or_else(|| ApiError(ouro_store::projects::not_found(slug)))?;
            Some(p.id)
        }
    };
    Ok((
        vis,
        EventFilter {
            project_id,
            kind: q.kind_filter()?,
        },
    ))
}

async fn list(
    State(st): State<AppState>,
    ctx: Ctx,
    Query(q): Query<EventQuery>,
) -> ApiResult<Json<Page<Event>>> {
    let (vis, filter) = scope(&st, &ctx, &q).await?;
    Ok(Json(
        events::list(&mut st.store.read().await?, &vis, &filter, q.page()?).await?,
    ))
}

async fn project_events(
    State(st): State<AppState>,
    ctx: Ctx,
    Query(q): Query<EventQuery>,
) -> ApiResult<Json<Page<Event>>> {
    let filter = EventFilter {
        project_id: Some(ctx.project()?.id),
        kind: q.kind_filter()?,
    };
    Ok(Json(
        events::list(
            &mut st.store.read().await?,
            &Visibility::All,
            &filter,
            q.page()?,
        )
        .await?,
    ))
}

async fn kinds() -> Json<&'static [EventKind]> {
    Json(KINDS)
}

/// Polling interval when no local commit wakes the stream (events written by another process).
const POLL: Duration = Duration::from_secs(2);

async fn stream(
    State(st): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    Query(q): Query<EventQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let (_, filter) = scope(&st, &ctx, &q).await?;
    // None: an admin, who sees everything.
    let user = ctx.user()?.clone();
    let user = (!user.is_admin).then_some(user);
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let start = match resume.or(q.after) {
        Some(s) => s,
        // A new subscriber without a position starts at "now".
        None => st.store.latest_seq_hint(),
    };
    let mut seq_rx = st.store.subscribe_seq();
    let mut shutdown = st.shutting_down.clone();
    let s = async_stream(move |tx| async move {
        let mut after = start;
        loop {
            if *shutdown.borrow() {
                return;
            }
            // Visibility is looked up again on each wake: projects the user joins or creates
            // after connecting must show up in the stream too.
            let page = match st.store.read().await {
                Ok(mut c) => match &user {
                    Some(u) => match ouro_store::projects::visible_ids(&mut c, Some(u)).await {
                        Ok(ids) => {
                            let vis = Visibility::Projects(ids);
                            events::list(&mut c, &vis, &filter, PageReq::new(after, Some(200)))
                                .await
                        }
                        Err(e) => Err(e),
                    },
                    None => {
                        events::list(
                            &mut c,
                            &Visibility::All,
                            &filter,
                            PageReq::new(after, Some(200)),
                        )
                        .await
                    }
                },
                Err(e) => Err(e),
            };
            match page {
                Ok(page) => {
                    let more = page.next_cursor.is_some();
                    for e in page.items {
                        after = e.seq;
                        let ev = SseEvent::default()
                            .id(e.seq.to_string())
                            .event(e.kind.clone())
                            .json_data(&e)
                            .unwrap_or_else(|_| SseEvent::default().comment("unencodable event"));
                        if tx.send(Ok(ev)).await.is_err() {
                            return;
                        }
                    }
                    if more {
                        continue;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "event stream read failed; retrying"),
            }
            tokio::select! {
                _ = seq_rx.changed() => {}
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    });
    Ok(Sse::new(s).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// A stream fed by a task through a small channel; the task ends when the client goes away.
fn async_stream<F, Fut>(f: F) -> impl Stream<Item = Result<SseEvent, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<SseEvent, Infallible>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
