//! Users, personal API tokens and browser sessions.

use ouro_core::events as ev;
use ouro_core::{Actor, ErrorCode, NewEvent, OuroError};
use serde::Serialize;
use serde_json::json;

use crate::crypto;
use crate::db::{Executor, Row, q};
use crate::{Store, StoreError, on_unique};

/// Token scopes. `api` allows everything the user may do; `read_api` only reads.
pub const SCOPES: &[&str] = &["api", "read_api"];

/// Browser sessions live this long (sliding is not needed at this size: users sign in again).
pub const SESSION_TTL_MS: i64 = 14 * 24 * 3600 * 1000;

#[derive(Debug, Clone, Serialize, PartialEq, schemars::JsonSchema)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub is_admin: bool,
    pub disabled: bool,
    #[serde(with = "ouro_core::time::serde_ms")]
    #[schemars(with = "String")]
    pub created_at: i64,
}

impl User {
    pub fn actor(&self) -> Actor {
        Actor::User {
            id: self.id,
            name: self.name.clone(),
        }
    }
}

fn user_from(r: &Row) -> Result<User, StoreError> {
    Ok(User {
        id: r.i64("id")?,
        name: r.text("name")?,
        is_admin: r.bool("is_admin")?,
        disabled: r.bool("disabled")?,
        created_at: r.i64("created_at")?,
    })
}

const USER_COLS: &str = "id, name, is_admin, disabled, created_at";

pub fn validate_password(pw: &str) -> Result<(), OuroError> {
    let n = pw.chars().count();
    if !(8..=256).contains(&n) {
        return Err(OuroError::new(
            ErrorCode::InvalidPassword,
            "the password must have 8 to 256 characters",
        )
        .with_details(json!({"field": "password"})));
    }
    Ok(())
}

/// Creates a user (the name and password are validated here, for every caller).
pub async fn create_user(
    store: &Store,
    actor: &Actor,
    name: &str,
    password: &str,
    is_admin: bool,
) -> Result<User, StoreError> {
    ouro_core::ids::validate_user_name(name)?;
    validate_password(password)?;
    // argon2 takes tens of milliseconds of CPU: keep it off the async worker threads.
    let pw = password.to_string();
    let hash = tokio::task::spawn_blocking(move || crypto::hash_password(&pw))
        .await
        .map_err(|e| StoreError::Config(format!("password hashing failed: {e}")))?;
    let mut tx = store.begin().await?;
    let row = on_unique(
        q(format!(
            "INSERT INTO users (name, password_hash, is_admin, created_at) VALUES ($1, $2, $3, $4) RETURNING {USER_COLS}"
        ))
        .bind(name)
        .bind(hash)
        .bind(is_admin)
        .bind(ouro_core::time::now_ms())
        .fetch_one(&mut tx)
        .await,
        || OuroError::new(ErrorCode::UserNameTaken, format!("a user named {name:?} already exists")),
    )?;
    let user = user_from(&row)?;
    tx.append(NewEvent::new(
        ev::USER_CREATED,
        actor,
        user.id,
        json!({"name": name, "is_admin": is_admin}),
    ))
    .await?;
    tx.commit().await?;
    Ok(user)
}

pub async fn user_by_name(ex: &mut impl Executor, name: &str) -> Result<Option<User>, StoreError> {
    q(format!("SELECT {USER_COLS} FROM users WHERE name = $1"))
        .bind(name)
        .fetch_optional(ex)
        .await?
        .as_ref()
        .map(user_from)
        .transpose()
}

pub async fn count_users(ex: &mut impl Executor) -> Result<i64, StoreError> {
    q("SELECT COUNT(*) AS n FROM users")
        .fetch_one(ex)
        .await?
        .i64("n")
}

pub async fn list_users(
    ex: &mut impl Executor,
    page: crate::PageReq,
) -> Result<crate::Page<User>, StoreError> {
    let rows = q(format!(
        "SELECT {USER_COLS} FROM users WHERE id > $1 ORDER BY id LIMIT $2"
    ))
    .bind(page.after)
    .bind(page.limit + 1)
    .fetch_all(ex)
    .await?;
    let items = rows.iter().map(user_from).collect::<Result<Vec<_>, _>>()?;
    Ok(page.finish(items, |u| u.id))
}

/// Sets the admin flag (audited).
pub async fn set_admin(
    store: &Store,
    actor: &Actor,
    name: &str,
    is_admin: bool,
) -> Result<User, StoreError> {
    let mut tx = store.begin().await?;
    let row = q(format!("UPDATE users SET is_admin = $1, version = version + 1 WHERE name = $2 RETURNING {USER_COLS}"))
        .bind(is_admin)
        .bind(name)
        .fetch_optional(&mut tx)
        .await?
        .ok_or_else(|| OuroError::new(ErrorCode::UserNotFound, format!("no user named {name:?}")))?;
    let user = user_from(&row)?;
    tx.append(NewEvent::new(
        ev::USER_UPDATED,
        actor,
        user.id,
        json!({"name": name, "is_admin": is_admin}),
    ))
    .await?;
    tx.commit().await?;
    Ok(user)
}

/// Checks a user name and password. `None` for an unknown user, a wrong password or a disabled account;
/// the time taken does not depend on which.
pub async fn check_password(
    store: &Store,
    name: &str,
    password: &str,
) -> Result<Option<User>, StoreError> {
    let row = q(format!(
        "SELECT {USER_COLS}, password_hash FROM users WHERE name = $1"
    ))
    .bind(name)
    .fetch_optional(&mut store.read().await?)
    .await?;
    let (user, hash) = match &row {
        Some(r) => (Some(user_from(r)?), r.text("password_hash")?),
        None => (None, crypto::dummy_password_hash().to_string()),
    };
    let pw = password.to_string();
    let ok = tokio::task::spawn_blocking(move || crypto::verify_password(&pw, &hash))
        .await
        .unwrap_or(false);
    Ok(user.filter(|u| ok && !u.disabled))
}

/// A personal API token as listed (never the secret).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ApiToken {
    pub id: i64,
    pub name: String,
    pub scopes: Vec<String>,
    #[serde(with = "ouro_core::time::serde_ms")]
    #[schemars(with = "String")]
    pub created_at: i64,
    #[serde(with = "ouro_core::time::serde_ms_opt")]
    #[schemars(with = "Option<String>")]
    pub expires_at: Option<i64>,
    #[serde(with = "ouro_core::time::serde_ms_opt")]
    #[schemars(with = "Option<String>")]
    pub last_used_at: Option<i64>,
    #[serde(with = "ouro_core::time::serde_ms_opt")]
    #[schemars(with = "Option<String>")]
    pub revoked_at: Option<i64>,
}

fn token_from(r: &Row) -> Result<ApiToken, StoreError> {
    Ok(ApiToken {
        id: r.i64("id")?,
        name: r.text("name")?,
        scopes: r
            .text("scopes")?
            .split(',')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        created_at: r.i64("created_at")?,
        expires_at: r.opt_i64("expires_at")?,
        last_used_at: r.opt_i64("last_used_at")?,
        revoked_at: r.opt_i64("revoked_at")?,
    })
}

pub fn validate_scopes(scopes: &[String]) -> Result<(), OuroError> {
    if scopes.is_empty() {
        return Err(OuroError::field(
            "scopes",
            format!("give at least one scope of: {}", SCOPES.join(", ")),
        ));
    }
    for s in scopes {
        if !SCOPES.contains(&s.as_str()) {
            return Err(OuroError::field(
                "scopes",
                format!("unknown scope {s:?}; known scopes: {}", SCOPES.join(", ")),
            ));
        }
    }
    Ok(())
}

/// Creates a token for `user` and returns it with its secret (shown once, stored hashed).
pub async fn create_token(
    store: &Store,
    actor: &Actor,
    user: &User,
    name: &str,
    scopes: &[String],
    expires_in_days: Option<i64>,
) -> Result<(ApiToken, String), StoreError> {
    validate_scopes(scopes)?;
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(
            OuroError::field("name", "the token name must have 1 to 100 characters").into(),
        );
    }
    if let Some(d) = expires_in_days
        && !(1..=3650).contains(&d)
    {
        return Err(OuroError::field("expires_in_days", "expiry must be 1 to 3650 days").into());
    }
    let secret = crypto::random_token("ouro_");
    let now = ouro_core::time::now_ms();
    let expires = expires_in_days.map(|d| now + d * 24 * 3600 * 1000);
    let mut tx = store.begin().await?;
    let row = q(
        "INSERT INTO api_tokens (user_id, name, token_hash, scopes, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
    )
    .bind(user.id)
    .bind(name)
    .bind(crypto::token_hash(&secret))
    .bind(scopes.join(","))
    .bind(now)
    .bind(expires)
    .fetch_one(&mut tx)
    .await?;
    let token = token_from(&row)?;
    tx.append(NewEvent::new(
        ev::TOKEN_CREATED,
        actor,
        token.id,
        json!({"user": user.name, "name": name, "scopes": scopes, "expires_at": expires.map(ouro_core::time::rfc3339)}),
    ))
    .await?;
    tx.commit().await?;
    Ok((token, secret))
}

pub async fn list_tokens(
    ex: &mut impl Executor,
    user_id: i64,
) -> Result<Vec<ApiToken>, StoreError> {
    q("SELECT * FROM api_tokens WHERE user_id = $1 ORDER BY id DESC")
        .bind(user_id)
        .fetch_all(ex)
        .await?
        .iter()
        .map(token_from)
        .collect()
}

/// Revokes one of `user`'s tokens.
pub async fn revoke_token(
    store: &Store,
    actor: &Actor,
    user: &User,
    id: i64,
) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    let n = q("UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL")
        .bind(ouro_core::time::now_ms())
        .bind(id)
        .bind(user.id)
        .execute(&mut tx)
        .await?;
    if n == 0 {
        return Err(OuroError::new(
            ErrorCode::TokenNotFound,
            format!("no active token {id} of yours"),
        )
        .into());
    }
    tx.append(NewEvent::new(
        ev::TOKEN_REVOKED,
        actor,
        id,
        json!({"user": user.name}),
    ))
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Resolves a bearer token to its user and scopes. `None` when unknown, revoked, expired or the user is disabled.
pub async fn authenticate_token(
    store: &Store,
    secret: &str,
) -> Result<Option<(User, Vec<String>)>, StoreError> {
    let now = ouro_core::time::now_ms();
    let row = q(format!(
        "SELECT t.id AS token_id, t.scopes, t.expires_at, t.revoked_at, t.last_used_at, {} \
         FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1",
        USER_COLS
            .split(", ")
            .map(|c| format!("u.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    ))
    .bind(crypto::token_hash(secret))
    .fetch_optional(&mut store.read().await?)
    .await?;
    let Some(r) = row else { return Ok(None) };
    let user = user_from(&r)?;
    if r.opt_i64("revoked_at")?.is_some()
        || r.opt_i64("expires_at")?.is_some_and(|e| e <= now)
        || user.disabled
    {
        return Ok(None);
    }
    // Recording every use would turn each read into a write; a minute's precision is enough.
    if r.opt_i64("last_used_at")?.is_none_or(|t| t < now - 60_000) {
        let mut tx = store.begin().await?;
        q("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(r.i64("token_id")?)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
    }
    let scopes = r.text("scopes")?.split(',').map(String::from).collect();
    Ok(Some((user, scopes)))
}

/// A browser session: its secret goes into the cookie, its CSRF token into forms.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: User,
    pub csrf: String,
}

/// Creates a session after a successful sign-in (audited) and returns (cookie secret, csrf token).
pub async fn create_session(
    store: &Store,
    user: &User,
    ip: &str,
) -> Result<(String, String), StoreError> {
    let secret = crypto::random_token("");
    let csrf = crypto::random_token("");
    let now = ouro_core::time::now_ms();
    let mut tx = store.begin().await?;
    q("INSERT INTO sessions (user_id, session_hash, csrf_token, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(user.id)
        .bind(crypto::token_hash(&secret))
        .bind(&csrf)
        .bind(now)
        .bind(now + SESSION_TTL_MS)
        .execute(&mut tx)
        .await?;
    tx.append(NewEvent::new(
        ev::USER_SIGNED_IN,
        &user.actor(),
        user.id,
        json!({"name": user.name, "ip": ip}),
    ))
    .await?;
    tx.commit().await?;
    Ok((secret, csrf))
}

pub async fn session(store: &Store, secret: &str) -> Result<Option<Session>, StoreError> {
    let row = q(format!(
        "SELECT s.csrf_token, s.expires_at, {} FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.session_hash = $1",
        USER_COLS.split(", ").map(|c| format!("u.{c}")).collect::<Vec<_>>().join(", ")
    ))
    .bind(crypto::token_hash(secret))
    .fetch_optional(&mut store.read().await?)
    .await?;
    let Some(r) = row else { return Ok(None) };
    let user = user_from(&r)?;
    if r.i64("expires_at")? <= ouro_core::time::now_ms() || user.disabled {
        return Ok(None);
    }
    Ok(Some(Session {
        user,
        csrf: r.text("csrf_token")?,
    }))
}

pub async fn delete_session(store: &Store, secret: &str, user: &User) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    q("DELETE FROM sessions WHERE session_hash = $1")
        .bind(crypto::token_hash(secret))
        .execute(&mut tx)
        .await?;
    tx.append(NewEvent::new(
        ev::USER_SIGNED_OUT,
        &user.actor(),
        user.id,
        json!({"name": user.name}),
    ))
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Records a failed sign-in in the ledger (audit).
pub async fn record_failed_sign_in(
    store: &Store,
    name: &str,
    ip: &str,
    reason: &str,
) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    tx.append(NewEvent::new(
        ev::USER_SIGN_IN_FAILED,
        &Actor::Anonymous,
        name,
        json!({"name": name, "ip": ip, "reason": reason}),
    ))
    .await?;
    tx.commit().await?;
    Ok(())
}
