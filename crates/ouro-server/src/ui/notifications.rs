//! Your notifications: the list with links to the items, mark one or all read.

use askama::Template;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use ouro_core::{ErrorCode, OuroError, Permission};
use ouro_plan::notifications::{self, Notification};
use ouro_store::PageReq;

use crate::AppState;
use crate::extract::{Ctx, Query};
use crate::registry::Registry;
use crate::ui::common::{Flash, When, fail, redirect_with_flash};
use crate::ui::{Chrome, Form, UiResult, render_status};

pub fn register(reg: &mut Registry) {
    use Permission::Authenticated;
    reg.route(Method::GET, "/notifications", Authenticated, page);
    reg.route(Method::POST, "/notifications/read", Authenticated, read_one);
    reg.route(
        Method::POST,
        "/notifications/read-all",
        Authenticated,
        read_all,
    );
}

pub struct Row {
    pub id: i64,
    pub summary: String,
    pub title: String,
    pub url: String,
    pub read: bool,
    pub kind: String,
    pub when: When,
}

#[derive(Template)]
#[template(path = "notifications.html")]
struct NotificationsPage {
    chrome: Chrome,
    rows: Vec<Row>,
    unread_only: bool,
    next: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
struct PageArgs {
    #[serde(default)]
    unread: bool,
    cursor: Option<String>,
}

async fn page(
    State(st): State<AppState>,
    ctx: Ctx,
    flash: Flash,
    Query(args): Query<PageArgs>,
) -> UiResult {
    let user = ctx.user()?;
    let after = args
        .cursor
        .as_deref()
        .and_then(|c| c.parse::<i64>().ok())
        .unwrap_or(0);
    let list = notifications::list(
        &mut st.store.read().await.map_err(|e| fail(&ctx, e))?,
        user.id,
        args.unread,
        PageReq::new(after, Some(50)),
    )
    .await
    .map_err(|e| fail(&ctx, e))?;
    let rows = list.items.into_iter().map(row).collect();
    let p = NotificationsPage {
        chrome: Chrome::of(&ctx).with_flash(flash.message()),
        rows,
        unread_only: args.unread,
        next: list.next_cursor,
    };
    Ok(flash.finish(render_status(StatusCode::OK, &p)))
}

fn row(n: Notification) -> Row {
    Row {
        id: n.id,
        summary: n.summary(),
        url: n.url(),
        title: n.title.clone().unwrap_or_else(|| {
            if n.item.contains('!') {
                String::new()
            } else {
                "(deleted)".into()
            }
        }),
        read: n.read,
        kind: n.kind.replace('_', " "),
        when: When::of(n.created_at),
    }
}

async fn read_one(State(st): State<AppState>, ctx: Ctx, form: Form) -> UiResult {
    let user = ctx.user()?;
    let id = form.get("id").trim().parse::<i64>().map_err(|_| {
        fail(
            &ctx,
            OuroError::new(ErrorCode::NotificationNotFound, "no such notification"),
        )
    })?;
    notifications::mark_read(&st.store, user.id, id)
        .await
        .map_err(|e| fail(&ctx, e))?;
    Ok(redirect_with_flash("/notifications", "Marked as read."))
}

async fn read_all(State(st): State<AppState>, ctx: Ctx) -> UiResult {
    let user = ctx.user()?;
    notifications::mark_all_read(&st.store, user.id)
        .await
        .map_err(|e| fail(&ctx, e))?;
    Ok(redirect_with_flash(
        "/notifications",
        "All notifications marked as read.",
    ))
}
