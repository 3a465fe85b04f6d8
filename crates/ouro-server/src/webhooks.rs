//! Outgoing webhooks: the API routes, the event consumer that queues deliveries, and the sender
//! that POSTs them with an HMAC signature and retries with exponential backoff.
//!
//! Flow: a commit appends events; the `webhooks` consumer (at-least-once, see
//! [`ouro_store::consumers`]) queues one delivery per matching active webhook; the sender claims
//! due deliveries, sends them, and records each attempt. Enqueuing is idempotent, so a replayed
//! event does not send twice.

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{Method, StatusCode, header};
use axum::response::IntoResponse;
use hmac::{Hmac, Mac};
use ouro_core::{Event, OuroError, Permission, Role};
use ouro_store::consumers::{self, BoxFuture, Consumer};
use ouro_store::webhooks::{self, Attempt, Delivery, DeliveryStatus, Webhook, WebhookPatch};
use ouro_store::{Page, Store, StoreError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::Notify;

use crate::AppState;
use crate::api::PageQuery;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Ctx, Json, Path, Query};
use crate::registry::Registry;

/// The name of the consumer cursor.
pub const CONSUMER: &str = "webhooks";
/// Deliveries sent concurrently per round.
const BATCH: i64 = 16;
/// The sender looks for due deliveries at least this often (other processes enqueue too).
const IDLE_POLL: Duration = Duration::from_secs(1);
/// No retry waits longer than a day, whatever the base and attempt number.
const MAX_RETRY_DELAY_MS: u64 = 24 * 3600 * 1000;

/// Wakes the sender early after something was queued. Process-wide because the state has no slot
/// for it; with several servers in one process (tests) a wake reaches all, which costs each one
/// query. The sender polls anyway, so a missed wake only delays a delivery by [`IDLE_POLL`].
static WAKE: Notify = Notify::const_new();

pub fn register(reg: &mut Registry) {
    use Permission::Project as InProject;
    let m = InProject(Role::Maintainer);
    reg.route(Method::GET, "/api/v1/projects/{slug}/webhooks", m, list)
        .doc(
            "webhooks",
            "A project's outgoing webhooks (never their secrets)",
        )
        .query("limit", "Page size, 1 to 500 (default 50)")
        .query("cursor", "next_cursor of the previous page")
        .response::<Page<Webhook>>(200);
    reg.route(Method::POST, "/api/v1/projects/{slug}/webhooks", m, create)
        .doc(
            "webhooks",
            "Add a webhook; the signing secret is in the response, once",
        )
        .request::<CreateWebhook>()
        .response::<CreatedWebhook>(201);
    reg.route(Method::GET, "/api/v1/projects/{slug}/webhooks/{id}", m, get)
        .doc("webhooks", "A webhook")
        .response::<Webhook>(200);
    reg.route(
        Method::PATCH,
        "/api/v1/projects/{slug}/webhooks/{id}",
        m,
        patch,
    )
    .doc(
        "webhooks",
        "Change a webhook's URL, kinds, active flag or secret (send `version` to detect conflicts)",
    )
    .request::<PatchWebhook>()
    .response::<Webhook>(200);
    reg.route(
        Method::DELETE,
        "/api/v1/projects/{slug}/webhooks/{id}",
        m,
        delete,
    )
    .doc("webhooks", "Delete a webhook and its delivery log");
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/webhooks/{id}/deliveries",
        m,
        deliveries,
    )
    .doc("webhooks", "A webhook's deliveries, newest first")
    .query("limit", "Page size, 1 to 500 (default 50)")
    .query("cursor", "next_cursor of the previous page")
    .response::<Page<Delivery>>(200);
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/webhooks/{id}/deliveries/{delivery}",
        m,
        delivery,
    )
    .doc(
        "webhooks",
        "One delivery and the outcome of its latest attempt",
    )
    .response::<Delivery>(200);
    reg.route(
        Method::POST,
        "/api/v1/projects/{slug}/webhooks/{id}/deliveries/{delivery}/redeliver",
        m,
        redeliver,
    )
    .doc(
        "webhooks",
        "Send a delivery's event again, as a new delivery",
    )
    .response::<Delivery>(201);
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Where to POST events: http:// or https://, at most 2000 characters.
    pub url: String,
    /// Event kind patterns: `*`, a prefix such as `project.*`, or exact kinds. Default `["*"]`.
    pub kinds: Option<Vec<String>>,
    /// The HMAC signing secret (8 to 256 characters). A random one is generated when absent.
    pub secret: Option<String>,
    /// Default true.
    pub active: Option<bool>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub webhook: Webhook,
    /// The signing secret. It is shown only this once; Ouro stores it encrypted.
    pub secret: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchWebhook {
    pub url: Option<String>,
    pub kinds: Option<Vec<String>>,
    pub active: Option<bool>,
    /// A new signing secret (8 to 256 characters); the old one stops working at once.
    pub secret: Option<String>,
    /// The version you read; if the webhook changed since, the update is refused with 409.
    pub version: Option<i64>,
}

/// Checks a caller-chosen signing secret.
pub fn validate_secret(secret: &str) -> Result<(), OuroError> {
    let n = secret.chars().count();
    if !(8..=256).contains(&n) || secret.chars().any(char::is_control) {
        return Err(OuroError::field(
            "secret",
            "the secret must have 8 to 256 characters and no control characters",
        ));
    }
    Ok(())
}

/// A new random signing secret.
pub fn generate_secret() -> String {
    ouro_store::crypto::random_token("whsec_")
}

/// The webhook `id` of the caller's project, or 404 (also for another project's webhook).
pub async fn webhook_of(st: &AppState, ctx: &Ctx, id: i64) -> Result<Webhook, ApiError> {
    let p = ctx.project()?;
    webhooks::get(&mut st.store.read().await?, p.id, id)
        .await?
        .ok_or_else(|| ApiError(webhooks::not_found(id)))
}

async fn list(
    State(st): State<AppState>,
    ctx: Ctx,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Page<Webhook>>> {
    let p = ctx.project()?;
    Ok(Json(
        webhooks::list(&mut st.store.read().await?, p.id, q.to_req()?).await?,
    ))
}

/// Creates a webhook, sealing the (given or generated) secret; returns the webhook and the secret.
pub async fn create_webhook(
    st: &AppState,
    ctx: &Ctx,
    url: &str,
    kinds: &[String],
    secret: Option<String>,
    active: bool,
) -> Result<(Webhook, String), ApiError> {
    let secret = match secret {
        Some(s) => {
            validate_secret(&s)?;
            s
        }
        None => generate_secret(),
    };
    let hook = webhooks::create(
        &st.store,
        &ctx.actor(),
        ctx.project()?,
        url,
        kinds,
        active,
        &st.secrets.seal(&secret),
    )
    .await?;
    Ok((hook, secret))
}

async fn create(
    State(st): State<AppState>,
    ctx: Ctx,
    Json(body): Json<CreateWebhook>,
) -> ApiResult<impl IntoResponse> {
    let kinds = body.kinds.unwrap_or_else(|| vec!["*".to_string()]);
    let (webhook, secret) = create_webhook(
        &st,
        &ctx,
        &body.url,
        &kinds,
        body.secret,
        body.active.unwrap_or(true),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedWebhook { webhook, secret }),
    ))
}

async fn get(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, i64)>,
) -> ApiResult<Json<Webhook>> {
    Ok(Json(webhook_of(&st, &ctx, id).await?))
}

async fn patch(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, i64)>,
    Json(body): Json<PatchWebhook>,
) -> ApiResult<Json<Webhook>> {
    if let Some(s) = &body.secret {
        validate_secret(s)?;
    }
    let patch = WebhookPatch {
        url: body.url,
        kinds: body.kinds,
        active: body.active,
        secret_enc: body.secret.map(|s| st.secrets.seal(&s)),
    };
    let hook = webhooks::update(
        &st.store,
        &ctx.actor(),
        ctx.project()?,
        id,
        body.version,
        patch,
    )
    .await?;
    Ok(Json(hook))
}

async fn delete(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, i64)>,
) -> ApiResult<StatusCode> {
    webhooks::delete(&st.store, &ctx.actor(), ctx.project()?, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn deliveries(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, i64)>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Page<Delivery>>> {
    let hook = webhook_of(&st, &ctx, id).await?;
    Ok(Json(
        webhooks::list_deliveries(&mut st.store.read().await?, hook.id, q.to_req()?).await?,
    ))
}

async fn delivery(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, id, delivery)): Path<(String, i64, i64)>,
) -> ApiResult<Json<Delivery>> {
    let hook = webhook_of(&st, &ctx, id).await?;
    webhooks::get_delivery(&mut st.store.read().await?, hook.id, delivery)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError(webhooks::delivery_not_found(delivery)))
}

/// Queues a delivery's event again and wakes the sender.
pub async fn redeliver_delivery(
    st: &AppState,
    ctx: &Ctx,
    id: i64,
    delivery: i64,
) -> Result<Delivery, ApiError> {
    let hook = webhook_of(st, ctx, id).await?;
    let d = webhooks::redeliver(&st.store, hook.id, delivery).await?;
    tracing::info!(webhook = hook.id, delivery = d.id, of = delivery, actor = %ctx.actor().label(), "redelivery queued");
    WAKE.notify_waiters();
    Ok(d)
}

async fn redeliver(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, id, delivery)): Path<(String, i64, i64)>,
) -> ApiResult<impl IntoResponse> {
    Ok((
        StatusCode::CREATED,
        Json(redeliver_delivery(&st, &ctx, id, delivery).await?),
    ))
}

/// Starts the consumer that queues deliveries and the sender. Both stop on shutdown.
pub fn spawn_workers(state: AppState) -> Vec<tokio::task::JoinHandle<()>> {
    let consumer = std::sync::Arc::new(Enqueuer);
    vec![
        tokio::spawn(consumers::run(
            state.store.clone(),
            consumer,
            state.shutting_down.clone(),
        )),
        tokio::spawn(send_loop(state)),
    ]
}

/// Queues each project event for the project's active webhooks whose kinds match.
struct Enqueuer;

impl Consumer for Enqueuer {
    fn name(&self) -> &'static str {
        CONSUMER
    }

    fn handle<'a>(
        &'a self,
        store: &'a Store,
        event: &'a Event,
    ) -> BoxFuture<'a, Result<(), OuroError>> {
        Box::pin(async move { enqueue(store, event).await.map_err(OuroError::from) })
    }
}

async fn enqueue(store: &Store, event: &Event) -> Result<(), StoreError> {
    let Some(project_id) = event.project_id else {
        return Ok(());
    };
    let hooks = webhooks::active_for_event(&mut store.read().await?, project_id, event.seq).await?;
    let wanted: Vec<&Webhook> = hooks.iter().filter(|w| w.wants(&event.kind)).collect();
    // Most events match nothing: only then take the (SQLite: single) writer.
    if wanted.is_empty() {
        return Ok(());
    }
    let mut tx = store.begin().await?;
    for w in wanted {
        webhooks::enqueue(&mut tx, w.id, event.seq).await?;
    }
    tx.commit().await?;
    WAKE.notify_waiters();
    Ok(())
}

async fn send_loop(state: AppState) {
    let mut shutdown = state.shutting_down.clone();
    // A claimed delivery is retried by anyone after this, should this process die mid-attempt.
    let lease_ms = (state
        .settings
        .webhook_timeout_secs
        .saturating_mul(1000)
        .saturating_add(30_000))
    .min(i64::MAX as u64) as i64;
    loop {
        if *shutdown.borrow() {
            return;
        }
        // Registered before looking, so a wake during the round is not lost.
        let wake = WAKE.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        let pause = match send_due(&state, lease_ms).await {
            Ok(true) => continue,
            Ok(false) => until_next_due(&state).await,
            Err(e) => {
                tracing::warn!(error = %e, "webhook sender cannot read or claim deliveries; retrying");
                IDLE_POLL
            }
        };
        tokio::select! {
            _ = wake => {}
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// Sends one round of due deliveries; false when nothing was due.
async fn send_due(state: &AppState, lease_ms: i64) -> Result<bool, StoreError> {
    let now = ouro_core::time::now_ms();
    let next = webhooks::next_due_at(&mut state.store.read().await?).await?;
    if next.is_none_or(|t| t > now) {
        return Ok(false);
    }
    let batch = webhooks::claim(&state.store, now, BATCH, lease_ms).await?;
    if batch.is_empty() {
        return Ok(false);
    }
    futures::future::join_all(batch.into_iter().map(|d| attempt(state, d))).await;
    Ok(true)
}

async fn until_next_due(state: &AppState) -> Duration {
    let next = match state.store.read().await {
        Ok(mut c) => webhooks::next_due_at(&mut c).await.ok().flatten(),
        Err(_) => None,
    };
    match next {
        Some(t) => Duration::from_millis(
            (t - ouro_core::time::now_ms()).clamp(0, IDLE_POLL.as_millis() as i64) as u64,
        ),
        None => IDLE_POLL,
    }
}

/// The wait before retry number `attempts` (1 after the first failure): base × 2^(attempts−1).
pub fn retry_delay_ms(base_ms: u64, attempts: i64) -> i64 {
    let exp = (attempts - 1).clamp(0, 40) as u32;
    base_ms.saturating_mul(1u64 << exp).min(MAX_RETRY_DELAY_MS) as i64
}

/// `sha256=` + hex HMAC-SHA256 of `body` keyed with `secret`: the `X-Ouro-Signature` value.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length; the error branch cannot happen but must not panic.
    match <Hmac<Sha256> as Mac>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(body);
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        }
        Err(_) => String::new(),
    }
}

/// What one attempt produced.
struct Outcome {
    ok: bool,
    response_status: Option<i64>,
    response_body: Option<String>,
    error: Option<String>,
}

impl Outcome {
    fn failed(error: impl Into<String>) -> Outcome {
        Outcome {
            ok: false,
            response_status: None,
            response_body: None,
            error: Some(error.into()),
        }
    }
}

async fn attempt(state: &AppState, d: Delivery) {
    let started = Instant::now();
    let out = match send(state, &d).await {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(delivery = d.id, error = %e, "cannot prepare a webhook delivery");
            Outcome::failed("Ouro could not read the webhook or the event; it will try again")
        }
    };
    let duration_ms = started.elapsed().as_millis().min(i64::MAX as u128) as i64;
    let attempts = d.attempts + 1;
    let max = i64::from(state.settings.webhook_max_attempts.max(1));
    let (status, next_attempt_at) = if out.ok {
        (DeliveryStatus::Succeeded, None)
    } else if attempts >= max {
        (DeliveryStatus::Failed, None)
    } else {
        let delay = retry_delay_ms(state.settings.webhook_retry_base_ms, attempts);
        (
            DeliveryStatus::Pending,
            Some(ouro_core::time::now_ms().saturating_add(delay)),
        )
    };
    state
        .metrics
        .webhook_attempt(if out.ok { "success" } else { "failure" });
    tracing::debug!(
        delivery = d.id,
        webhook = d.webhook_id,
        seq = d.event_seq,
        attempts,
        status = status.as_str(),
        "webhook attempt"
    );
    let a = Attempt {
        status,
        attempts,
        next_attempt_at,
        response_status: out.response_status,
        response_body: out.response_body,
        error: out.error,
        duration_ms: Some(duration_ms),
    };
    if let Err(e) = webhooks::record_attempt(&state.store, d.id, &a).await {
        // The lease runs out and the delivery is tried again: at-least-once.
        tracing::warn!(delivery = d.id, error = %e, "cannot record a webhook attempt");
    }
}

async fn send(state: &AppState, d: &Delivery) -> Result<Outcome, StoreError> {
    let mut conn = state.store.read().await?;
    let Some(target) = webhooks::target(&mut conn, d.webhook_id).await? else {
        return Ok(Outcome::failed("the webhook was deleted"));
    };
    let Some(event) = ouro_store::events::get(&mut conn, d.event_seq).await? else {
        return Ok(Outcome::failed(format!(
            "event {} is not in the ledger",
            d.event_seq
        )));
    };
    drop(conn);
    let Some(secret) = state.secrets.open(&target.secret_enc) else {
        return Ok(Outcome::failed(
            "cannot decrypt the signing secret: the instance key changed; set a new secret on the webhook",
        ));
    };
    // The same serialization as GET /api/v1/events.
    let body = match serde_json::to_vec(&event) {
        Ok(b) => b,
        Err(e) => return Ok(Outcome::failed(format!("cannot encode the event: {e}"))),
    };
    let req = state
        .http
        .post(&target.webhook.url)
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::USER_AGENT,
            concat!("Ouro-Webhook/", env!("CARGO_PKG_VERSION")),
        )
        .header("X-Ouro-Event", event.kind.as_str())
        .header("X-Ouro-Delivery", d.id.to_string())
        .header("X-Ouro-Seq", event.seq.to_string())
        .header("X-Ouro-Signature", signature(secret.as_bytes(), &body))
        .body(body);
    Ok(match req.send().await {
        Ok(resp) => {
            let status = resp.status();
            let body = read_capped(resp, webhooks::MAX_RESPONSE_BODY).await;
            Outcome {
                ok: status.is_success(),
                response_status: Some(i64::from(status.as_u16())),
                response_body: Some(body),
                error: (!status.is_success())
                    .then(|| format!("the receiver answered HTTP {}", status.as_u16())),
            }
        }
        Err(e) => Outcome::failed(describe(&e, state.settings.webhook_timeout_secs)),
    })
}

/// Reads at most `max` bytes of a response body: a receiver must not make Ouro buffer megabytes.
async fn read_capped(mut resp: reqwest::Response, max: usize) -> String {
    let mut buf = Vec::new();
    while buf.len() < max {
        match resp.chunk().await {
            Ok(Some(c)) => buf.extend_from_slice(&c),
            _ => break,
        }
    }
    buf.truncate(max);
    String::from_utf8_lossy(&buf).into_owned()
}

/// A network error for the delivery log, with its causes but without the URL (it is on the page).
fn describe(e: &reqwest::Error, timeout_secs: u64) -> String {
    if e.is_timeout() {
        return format!("no answer within {timeout_secs} s (webhook_timeout_secs)");
    }
    let mut msg = if e.is_connect() {
        "cannot connect".to_string()
    } else {
        "request failed".to_string()
    };
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_schedule_doubles_and_is_capped() {
        assert_eq!(
            [1, 2, 3, 4].map(|a| retry_delay_ms(2000, a)),
            [2000, 4000, 8000, 16000]
        );
        assert_eq!(retry_delay_ms(2000, 0), 2000);
        assert_eq!(retry_delay_ms(u64::MAX, 99), MAX_RETRY_DELAY_MS as i64);
    }

    #[test]
    fn signature_matches_a_known_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn secrets_are_checked() {
        assert!(validate_secret("short").is_err());
        assert!(validate_secret("long enough").is_ok());
        assert!(validate_secret("with\nnewline").is_err());
        assert!(generate_secret().starts_with("whsec_"));
    }
}
