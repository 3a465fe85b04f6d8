//! Outgoing webhooks of a project and their delivery log.
//!
//! Webhook changes are domain state changes and append `webhook.*` events. Deliveries are
//! bookkeeping of the sender and append nothing: an event per attempt would itself be delivered,
//! and loop. The signing secret is stored sealed (see [`crate::crypto::SecretBox`]); callers pass
//! the sealed text in and this module never sees it in clear.

use ouro_core::events::{self as ev, KINDS};
use ouro_core::{Actor, ErrorCode, NewEvent, OuroError};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::db::{Executor, Row, q};
use crate::projects::Project;
use crate::{Page, PageReq, Store, StoreError};

/// The longest accepted URL.
pub const MAX_URL_LEN: usize = 2000;
/// Webhooks per project: each event fans out to all of them.
pub const MAX_PER_PROJECT: i64 = 100;
/// Patterns per webhook.
pub const MAX_KINDS: usize = 100;
/// Bytes of a receiver's response body kept in the delivery log.
pub const MAX_RESPONSE_BODY: usize = 4096;
const MAX_ERROR: usize = 1000;

#[derive(Debug, Clone, Serialize, PartialEq, schemars::JsonSchema)]
pub struct Webhook {
    pub id: i64,
    #[serde(skip)]
    pub project_id: i64,
    /// Where events are POSTed (http or https).
    pub url: String,
    /// Event kind patterns: `*`, a prefix such as `project.*`, or an exact kind.
    pub kinds: Vec<String>,
    /// Inactive webhooks receive nothing; their pending deliveries wait.
    pub active: bool,
    #[serde(with = "ouro_core::time::serde_ms")]
    #[schemars(with = "String")]
    pub created_at: i64,
    #[serde(with = "ouro_core::time::serde_ms")]
    #[schemars(with = "String")]
    pub updated_at: i64,
    /// Send it back with an update; a stale version gets 409.
    pub version: i64,
    /// Only events after this ledger position are delivered (the webhook's own creation).
    #[serde(skip)]
    pub since_seq: i64,
}

impl Webhook {
    /// Whether an event of `kind` goes to this webhook.
    pub fn wants(&self, kind: &str) -> bool {
        self.kinds.iter().any(|p| ev::kind_matches(p, kind))
    }
}

fn webhook_from(r: &Row) -> Result<Webhook, StoreError> {
    let kinds = serde_json::from_str(&r.text("kinds")?)
        .map_err(|e| StoreError::Decode(format!("webhooks.kinds is not a JSON list: {e}")))?;
    Ok(Webhook {
        id: r.i64("id")?,
        project_id: r.i64("project_id")?,
        url: r.text("url")?,
        kinds,
        active: r.bool("active")?,
        created_at: r.i64("created_at")?,
        updated_at: r.i64("updated_at")?,
        version: r.i64("version")?,
        since_seq: r.i64("since_seq")?,
    })
}

pub fn not_found(id: i64) -> OuroError {
    OuroError::new(
        ErrorCode::WebhookNotFound,
        format!("webhook {id} does not exist in this project"),
    )
}

pub fn delivery_not_found(id: i64) -> OuroError {
    OuroError::new(
        ErrorCode::DeliveryNotFound,
        format!("delivery {id} does not exist for this webhook"),
    )
}

/// Checks a webhook URL: http or https, a host, an optional numeric port, at most 2000 characters,
/// no whitespace or control characters.
pub fn validate_url(url: &str) -> Result<(), OuroError> {
    let bad = |why: &str| OuroError::field("url", format!("invalid webhook URL: {why}"));
    if url.is_empty() {
        return Err(bad(
            "it is empty; use http://HOST/PATH or https://HOST/PATH",
        ));
    }
    if url.len() > MAX_URL_LEN {
        return Err(bad("it is longer than 2000 characters"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("it contains spaces or control characters"));
    }
    let Some((_, host, port)) = split_origin(url) else {
        return Err(bad("use http://HOST/PATH or https://HOST/PATH"));
    };
    let host_ok = if let Some(ip6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        !ip6.is_empty()
            && ip6
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
    } else {
        !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | '%'))
    };
    if !host_ok {
        return Err(bad("the host name is missing or not valid"));
    }
    if let Some(p) = port
        && !(p.parse::<u16>().is_ok_and(|n| n > 0))
    {
        return Err(bad("the port must be a number from 1 to 65535"));
    }
    Ok(())
}

/// (scheme, host, port) of an http(s) URL, without user info; `None` for any other scheme.
fn split_origin(url: &str) -> Option<(&'static str, &str, Option<&str>)> {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    let (scheme, rest) = if lower.starts_with("https://") {
        ("https", &url[8..])
    } else if lower.starts_with("http://") {
        ("http", &url[7..])
    } else {
        return None;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let hostport = authority
        .rsplit_once('@')
        .map(|(_, h)| h)
        .unwrap_or(authority);
    if hostport.starts_with('[') {
        let end = hostport.find(']')?;
        let (host, after) = hostport.split_at(end + 1);
        return match after {
            "" => Some((scheme, host, None)),
            p => Some((scheme, host, Some(p.strip_prefix(':')?))),
        };
    }
    match hostport.split_once(':') {
        Some((h, p)) => Some((scheme, h, Some(p))),
        None => Some((scheme, hostport, None)),
    }
}

/// The URL as events show it: scheme, host and port only. Paths and queries often carry tokens
/// (chat webhooks), and events are readable by every viewer of the project.
pub fn redacted_url(url: &str) -> String {
    match split_origin(url) {
        Some((scheme, host, Some(port))) => format!("{scheme}://{host}:{port}"),
        Some((scheme, host, None)) => format!("{scheme}://{host}"),
        None => String::new(),
    }
}

/// Validates and normalises kind patterns: trimmed, duplicates dropped, order kept.
pub fn validate_kinds(kinds: &[String]) -> Result<Vec<String>, OuroError> {
    let field = |m: String| OuroError::field("kinds", m);
    if kinds.is_empty() {
        return Err(field(
            "give at least one event kind pattern, e.g. [\"*\"] for every event".into(),
        ));
    }
    if kinds.len() > MAX_KINDS {
        return Err(field(format!("give at most {MAX_KINDS} kind patterns")));
    }
    let mut out: Vec<String> = Vec::with_capacity(kinds.len());
    for k in kinds {
        let k = k.trim();
        let known = match k {
            "*" => true,
            _ => match k.strip_suffix(".*") {
                Some(prefix) => {
                    !prefix.is_empty() && KINDS.iter().any(|kind| ev::kind_matches(k, kind.name))
                }
                None => ev::kind(k).is_some(),
            },
        };
        if !known {
            let shown: String = k.chars().take(100).collect();
            return Err(field(format!(
                "{shown:?} is not an event kind or pattern: use \"*\", a prefix such as \"project.*\", \
                 or a kind listed by GET /api/v1/event-kinds"
            )));
        }
        if !out.iter().any(|o| o == k) {
            out.push(k.to_string());
        }
    }
    Ok(out)
}

fn kinds_json(kinds: &[String]) -> String {
    Value::from(kinds.to_vec()).to_string()
}

/// Creates a webhook for `project`. `secret_enc` is the sealed signing secret.
pub async fn create(
    store: &Store,
    actor: &Actor,
    project: &Project,
    url: &str,
    kinds: &[String],
    active: bool,
    secret_enc: &str,
) -> Result<Webhook, StoreError> {
    validate_url(url)?;
    let kinds = validate_kinds(kinds)?;
    let now = ouro_core::time::now_ms();
    let mut tx = store.begin().await?;
    let count = q("SELECT COUNT(*) AS n FROM webhooks WHERE project_id = $1")
        .bind(project.id)
        .fetch_one(&mut tx)
        .await?;
    if count.i64("n")? >= MAX_PER_PROJECT {
        return Err(OuroError::new(
            ErrorCode::ValidationFailed,
            format!("a project can have at most {MAX_PER_PROJECT} webhooks; delete one first"),
        )
        .into());
    }
    let row = q(
        "INSERT INTO webhooks (project_id, url, secret_enc, kinds, active, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING id",
    )
    .bind(project.id)
    .bind(url)
    .bind(secret_enc)
    .bind(kinds_json(&kinds))
    .bind(active)
    .bind(now)
    .fetch_one(&mut tx)
    .await?;
    let id = row.i64("id")?;
    let seq = tx
        .append(
            NewEvent::new(
                ev::WEBHOOK_CREATED,
                actor,
                id,
                json!({"target": redacted_url(url), "kinds": kinds, "active": active}),
            )
            .in_project(project.id, &project.slug),
        )
        .await?;
    let row = q("UPDATE webhooks SET since_seq = $1 WHERE id = $2 RETURNING *")
        .bind(seq)
        .bind(id)
        .fetch_one(&mut tx)
        .await?;
    let hook = webhook_from(&row)?;
    tx.commit().await?;
    Ok(hook)
}

/// A project's webhooks by id.
pub async fn list(
    ex: &mut impl Executor,
    project_id: i64,
    page: PageReq,
) -> Result<Page<Webhook>, StoreError> {
    let rows = q("SELECT * FROM webhooks WHERE project_id = $1 AND id > $2 ORDER BY id LIMIT $3")
        .bind(project_id)
        .bind(page.after)
        .bind(page.limit + 1)
        .fetch_all(ex)
        .await?;
    let items = rows
        .iter()
        .map(webhook_from)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(page.finish(items, |w| w.id))
}

/// A webhook of `project_id`; `None` also when it belongs to another project.
pub async fn get(
    ex: &mut impl Executor,
    project_id: i64,
    id: i64,
) -> Result<Option<Webhook>, StoreError> {
    q("SELECT * FROM webhooks WHERE id = $1 AND project_id = $2")
        .bind(id)
        .bind(project_id)
        .fetch_optional(ex)
        .await?
        .as_ref()
        .map(webhook_from)
        .transpose()
}

/// What the sender needs: the webhook and its sealed secret.
#[derive(Debug, Clone)]
pub struct Target {
    pub webhook: Webhook,
    pub secret_enc: String,
}

pub async fn target(ex: &mut impl Executor, id: i64) -> Result<Option<Target>, StoreError> {
    let Some(r) = q("SELECT * FROM webhooks WHERE id = $1")
        .bind(id)
        .fetch_optional(ex)
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(Target {
        webhook: webhook_from(&r)?,
        secret_enc: r.text("secret_enc")?,
    }))
}

/// Active webhooks of a project that existed before event `seq` (candidates for that event).
pub async fn active_for_event(
    ex: &mut impl Executor,
    project_id: i64,
    seq: i64,
) -> Result<Vec<Webhook>, StoreError> {
    q("SELECT * FROM webhooks WHERE project_id = $1 AND active = $2 AND since_seq < $3 ORDER BY id")
        .bind(project_id)
        .bind(true)
        .bind(seq)
        .fetch_all(ex)
        .await?
        .iter()
        .map(webhook_from)
        .collect()
}

/// A partial update. `None` fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct WebhookPatch {
    pub url: Option<String>,
    pub kinds: Option<Vec<String>>,
    pub active: Option<bool>,
    /// A new sealed secret (rotation).
    pub secret_enc: Option<String>,
}

/// Applies `patch` if the webhook is still at `expected_version` (when given); otherwise 409
/// with the current version in the details.
pub async fn update(
    store: &Store,
    actor: &Actor,
    project: &Project,
    id: i64,
    expected_version: Option<i64>,
    patch: WebhookPatch,
) -> Result<Webhook, StoreError> {
    if let Some(u) = &patch.url {
        validate_url(u)?;
    }
    let kinds = patch.kinds.as_deref().map(validate_kinds).transpose()?;
    let mut tx = store.begin().await?;
    let cur = get(&mut tx, project.id, id)
        .await?
        .ok_or_else(|| not_found(id))?;
    if let Some(v) = expected_version
        && v != cur.version
    {
        return Err(OuroError::stale_version("webhook", cur.version).into());
    }
    let url = patch.url.unwrap_or(cur.url.clone());
    let kinds = kinds.unwrap_or(cur.kinds.clone());
    let active = patch.active.unwrap_or(cur.active);
    let mut changes = Map::new();
    if url != cur.url {
        changes.insert(
            "target".into(),
            json!({"old": redacted_url(&cur.url), "new": redacted_url(&url)}),
        );
    }
    if kinds != cur.kinds {
        changes.insert("kinds".into(), json!({"old": cur.kinds, "new": kinds}));
    }
    if active != cur.active {
        changes.insert("active".into(), json!({"old": cur.active, "new": active}));
    }
    if patch.secret_enc.is_some() {
        // Only the fact: the secret itself never enters the ledger.
        changes.insert("secret".into(), json!("rotated"));
    }
    if changes.is_empty() {
        return Ok(cur);
    }
    let row = q("UPDATE webhooks SET url = $1, kinds = $2, active = $3, secret_enc = COALESCE($4, secret_enc), \
                 updated_at = $5, version = version + 1 WHERE id = $6 AND version = $7 RETURNING *")
        .bind(&url)
        .bind(kinds_json(&kinds))
        .bind(active)
        .bind(patch.secret_enc)
        .bind(ouro_core::time::now_ms())
        .bind(cur.id)
        .bind(cur.version)
        .fetch_optional(&mut tx)
        .await?
        .ok_or_else(|| OuroError::stale_version("webhook", cur.version + 1))?;
    let hook = webhook_from(&row)?;
    tx.append(
        NewEvent::new(
            ev::WEBHOOK_UPDATED,
            actor,
            id,
            json!({"changes": Value::Object(changes)}),
        )
        .in_project(project.id, &project.slug),
    )
    .await?;
    tx.commit().await?;
    Ok(hook)
}

/// Deletes a webhook and its delivery log.
pub async fn delete(
    store: &Store,
    actor: &Actor,
    project: &Project,
    id: i64,
) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    let cur = get(&mut tx, project.id, id)
        .await?
        .ok_or_else(|| not_found(id))?;
    q("DELETE FROM webhooks WHERE id = $1")
        .bind(id)
        .execute(&mut tx)
        .await?;
    tx.append(
        NewEvent::new(
            ev::WEBHOOK_DELETED,
            actor,
            id,
            json!({"target": redacted_url(&cur.url)}),
        )
        .in_project(project.id, &project.slug),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Where a delivery stands.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Waiting for its first attempt or a retry.
    Pending,
    /// The receiver answered 2xx.
    Succeeded,
    /// Every attempt failed; redeliver to try again.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<DeliveryStatus> {
        [
            DeliveryStatus::Pending,
            DeliveryStatus::Succeeded,
            DeliveryStatus::Failed,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// One event sent (or to be sent) to one webhook, with the outcome of its latest attempt.
#[derive(Debug, Clone, Serialize, PartialEq, schemars::JsonSchema)]
pub struct Delivery {
    pub id: i64,
    pub webhook_id: i64,
    /// The ledger event delivered.
    pub event_seq: i64,
    pub event_kind: Option<String>,
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: i64,
    /// When the next attempt is due (pending deliveries only).
    #[serde(with = "ouro_core::time::serde_ms_opt")]
    #[schemars(with = "Option<String>")]
    pub next_attempt_at: Option<i64>,
    /// HTTP status of the latest response, if the receiver answered.
    pub response_status: Option<i64>,
    /// The first 4 KiB of the latest response body.
    pub response_body: Option<String>,
    /// Why the latest attempt failed (network error, timeout, non-2xx status).
    pub error: Option<String>,
    pub duration_ms: Option<i64>,
    /// Set on a manual redelivery: the delivery it repeats.
    pub redelivery_of: Option<i64>,
    #[serde(with = "ouro_core::time::serde_ms")]
    #[schemars(with = "String")]
    pub created_at: i64,
    #[serde(with = "ouro_core::time::serde_ms")]
    #[schemars(with = "String")]
    pub updated_at: i64,
}

fn delivery_from(r: &Row) -> Result<Delivery, StoreError> {
    let status = r.text("status")?;
    Ok(Delivery {
        id: r.i64("id")?,
        webhook_id: r.i64("webhook_id")?,
        event_seq: r.i64("event_seq")?,
        event_kind: r.opt_text("event_kind")?,
        status: DeliveryStatus::parse(&status)
            .ok_or_else(|| StoreError::Decode(format!("unknown delivery status {status:?}")))?,
        attempts: r.i64("attempts")?,
        next_attempt_at: r.opt_i64("next_attempt_at")?,
        response_status: r.opt_i64("response_status")?,
        response_body: r.opt_text("response_body")?,
        error: r.opt_text("error")?,
        duration_ms: r.opt_i64("duration_ms")?,
        redelivery_of: r.opt_i64("redelivery_of")?,
        created_at: r.i64("created_at")?,
        updated_at: r.i64("updated_at")?,
    })
}

const DELIVERY_SELECT: &str = "SELECT d.*, e.kind AS event_kind FROM webhook_deliveries d LEFT JOIN events e ON e.seq = d.event_seq";

/// Queues event `event_seq` for a webhook, due now. Idempotent: the consumer may replay an
/// event after a crash, and the second enqueue returns `None`.
pub async fn enqueue(
    ex: &mut impl Executor,
    webhook_id: i64,
    event_seq: i64,
) -> Result<Option<i64>, StoreError> {
    let now = ouro_core::time::now_ms();
    q("INSERT INTO webhook_deliveries (webhook_id, event_seq, status, attempts, next_attempt_at, created_at, updated_at) \
       VALUES ($1, $2, 'pending', 0, $3, $3, $3) ON CONFLICT DO NOTHING RETURNING id")
        .bind(webhook_id)
        .bind(event_seq)
        .bind(now)
        .fetch_optional(ex)
        .await?
        .map(|r| r.i64("id"))
        .transpose()
}

/// Pending deliveries of active webhooks due at `now`, oldest due first.
pub async fn due(
    ex: &mut impl Executor,
    now: i64,
    limit: i64,
) -> Result<Vec<Delivery>, StoreError> {
    q(format!(
        "{DELIVERY_SELECT} JOIN webhooks w ON w.id = d.webhook_id \
         WHERE d.status = 'pending' AND d.next_attempt_at <= $1 AND w.active = $2 \
         ORDER BY d.next_attempt_at, d.id LIMIT $3"
    ))
    .bind(now)
    .bind(true)
    .bind(limit)
    .fetch_all(ex)
    .await?
    .iter()
    .map(delivery_from)
    .collect()
}

/// When the next pending delivery of an active webhook is due, if any.
pub async fn next_due_at(ex: &mut impl Executor) -> Result<Option<i64>, StoreError> {
    q("SELECT MIN(d.next_attempt_at) AS t FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id \
       WHERE d.status = 'pending' AND w.active = $1")
        .bind(true)
        .fetch_one(ex)
        .await?
        .opt_i64("t")
}

/// Takes up to `limit` due deliveries for sending by pushing their due time `lease_ms` ahead,
/// so another sender (another process on the same database) skips them, and a sender that dies
/// mid-attempt leaves them to be retried once the lease runs out.
pub async fn claim(
    store: &Store,
    now: i64,
    limit: i64,
    lease_ms: i64,
) -> Result<Vec<Delivery>, StoreError> {
    let mut tx = store.begin().await?;
    let mut claimed = Vec::new();
    for mut d in due(&mut tx, now, limit).await? {
        let n = q("UPDATE webhook_deliveries SET next_attempt_at = $1 \
                   WHERE id = $2 AND status = 'pending' AND next_attempt_at = $3")
        .bind(now + lease_ms)
        .bind(d.id)
        .bind(d.next_attempt_at)
        .execute(&mut tx)
        .await?;
        if n == 1 {
            d.next_attempt_at = Some(now + lease_ms);
            claimed.push(d);
        }
    }
    tx.commit().await?;
    Ok(claimed)
}

/// The outcome of one attempt, as the sender decided it.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub status: DeliveryStatus,
    /// Attempts made, this one included.
    pub attempts: i64,
    /// When to retry (pending only).
    pub next_attempt_at: Option<i64>,
    pub response_status: Option<i64>,
    pub response_body: Option<String>,
    pub error: Option<String>,
    pub duration_ms: Option<i64>,
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Records an attempt. A delivery deleted meanwhile (its webhook was deleted) is ignored.
pub async fn record_attempt(store: &Store, id: i64, a: &Attempt) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    q("UPDATE webhook_deliveries SET status = $1, attempts = $2, next_attempt_at = $3, response_status = $4, \
       response_body = $5, error = $6, duration_ms = $7, updated_at = $8 WHERE id = $9")
        .bind(a.status.as_str())
        .bind(a.attempts)
        .bind(a.next_attempt_at)
        .bind(a.response_status)
        .bind(a.response_body.as_deref().map(|b| truncate_utf8(b, MAX_RESPONSE_BODY)))
        .bind(a.error.as_deref().map(|e| truncate_utf8(e, MAX_ERROR)))
        .bind(a.duration_ms)
        .bind(ouro_core::time::now_ms())
        .bind(id)
        .execute(&mut tx)
        .await?;
    tx.commit().await
}

/// A webhook's deliveries, newest first. The cursor is the last id of the previous page.
pub async fn list_deliveries(
    ex: &mut impl Executor,
    webhook_id: i64,
    page: PageReq,
) -> Result<Page<Delivery>, StoreError> {
    let rows = q(format!(
        "{DELIVERY_SELECT} WHERE d.webhook_id = $1 AND ($2 = 0 OR d.id < $2) ORDER BY d.id DESC LIMIT $3"
    ))
    .bind(webhook_id)
    .bind(page.after)
    .bind(page.limit + 1)
    .fetch_all(ex)
    .await?;
    let items = rows
        .iter()
        .map(delivery_from)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(page.finish(items, |d| d.id))
}

pub async fn get_delivery(
    ex: &mut impl Executor,
    webhook_id: i64,
    id: i64,
) -> Result<Option<Delivery>, StoreError> {
    q(format!(
        "{DELIVERY_SELECT} WHERE d.id = $1 AND d.webhook_id = $2"
    ))
    .bind(id)
    .bind(webhook_id)
    .fetch_optional(ex)
    .await?
    .as_ref()
    .map(delivery_from)
    .transpose()
}

/// Sends an event again: a new delivery, due now, that points at the one it repeats.
pub async fn redeliver(
    store: &Store,
    webhook_id: i64,
    delivery_id: i64,
) -> Result<Delivery, StoreError> {
    let mut tx = store.begin().await?;
    let orig = get_delivery(&mut tx, webhook_id, delivery_id)
        .await?
        .ok_or_else(|| delivery_not_found(delivery_id))?;
    let now = ouro_core::time::now_ms();
    let row = q("INSERT INTO webhook_deliveries (webhook_id, event_seq, status, attempts, next_attempt_at, \
                 redelivery_of, created_at, updated_at) VALUES ($1, $2, 'pending', 0, $3, $4, $3, $3) RETURNING id")
        .bind(webhook_id)
        .bind(orig.event_seq)
        .bind(now)
        .bind(orig.id)
        .fetch_one(&mut tx)
        .await?;
    let id = row.i64("id")?;
    let d = get_delivery(&mut tx, webhook_id, id)
        .await?
        .ok_or_else(|| delivery_not_found(id))?;
    tx.commit().await?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        for ok in [
            "http://127.0.0.1:8080/hook",
            "https://example.com",
            "HTTPS://Example.com/a?b=c#d",
            "http://user:pw@h.example:1/x",
            "http://[::1]:9000/x",
        ] {
            assert!(validate_url(ok).is_ok(), "{ok}");
        }
        let long = format!("http://h/{}", "a".repeat(2000));
        for bad in [
            "",
            "ftp://x",
            "http://",
            "http:///x",
            "http://h:0/",
            "http://h:99999",
            "http://a b",
            "javascript:x",
            &long,
        ] {
            assert!(validate_url(bad).is_err(), "{bad}");
        }
        assert_eq!(
            redacted_url("https://u:p@hooks.example:8443/T0/secret?x=1"),
            "https://hooks.example:8443"
        );
    }

    #[test]
    fn kinds() {
        let v = |k: &[&str]| validate_kinds(&k.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            v(&["*", " project.* ", "project.*", "cr.merged"]).unwrap(),
            vec!["*", "project.*", "cr.merged"]
        );
        for bad in [
            &[][..],
            &["nope"],
            &["nope.*"],
            &[".*"],
            &["project."],
            &["proj*"],
        ] {
            assert!(v(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncate_utf8("héllo", 2), "h");
        assert_eq!(truncate_utf8("abc", 10), "abc");
    }
}
