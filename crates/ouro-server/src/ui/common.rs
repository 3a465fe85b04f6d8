//! Small pieces the management pages share: one-off messages across a redirect, errors that keep
//! the caller's frame, and how times are shown.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use ouro_core::OuroError;

use crate::auth::cookie_value;
use crate::extract::Ctx;
use crate::ui::{UiError, url_decode, url_encode};

const FLASH_COOKIE: &str = "ouro_flash";

/// A message set by the previous request (post/redirect/get), read once by the next page.
/// A cookie rather than a query parameter so nobody can craft a link that shows a fake notice.
pub struct Flash(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for Flash {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let msg = cookie_value(&parts.headers, FLASH_COOKIE)
            .and_then(|v| url_decode(&v))
            .filter(|m| !m.is_empty());
        Ok(Flash(msg))
    }
}

impl Flash {
    /// The message to show; `finish` must wrap the response so it is shown only once.
    pub fn message(&self) -> Option<String> {
        self.0.clone()
    }

    /// Clears the cookie when a message was shown.
    pub fn finish(&self, mut res: Response) -> Response {
        if self.0.is_some() {
            res.headers_mut().append(
                header::SET_COOKIE,
                HeaderValue::from_static("ouro_flash=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"),
            );
        }
        res
    }
}

/// Redirects to `to` and leaves `msg` for the page there.
pub fn redirect_with_flash(to: &str, msg: &str) -> Response {
    with_flash(Redirect::to(to).into_response(), msg)
}

/// Adds the cookie that carries `msg` to the next page.
pub fn with_flash(mut res: Response, msg: &str) -> Response {
    let msg: String = msg.chars().take(300).collect();
    let cookie = format!(
        "{FLASH_COOKIE}={}; Path=/; HttpOnly; SameSite=Lax; Max-Age=60",
        url_encode(&msg)
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    res
}

/// An error page that still shows who is signed in.
pub fn fail(ctx: &Ctx, e: impl Into<OuroError>) -> UiError {
    UiError(e.into(), ctx.principal.clone())
}

/// A stored time for display: machine-readable for `<time datetime>`, short for people.
pub struct When {
    pub iso: String,
    pub text: String,
}

impl When {
    pub fn of(ms: i64) -> When {
        let iso = ouro_core::time::rfc3339(ms);
        // "2025-03-01T12:34:56.789Z" -> "2025-03-01 12:34 UTC": minutes are precise enough here.
        let text = match (iso.get(..10), iso.get(11..16)) {
            (Some(d), Some(t)) => format!("{d} {t} UTC"),
            _ => iso.clone(),
        };
        When { iso, text }
    }
}

/// The field a validation error names (`details.field`), if any.
pub fn field_of(e: &OuroError) -> Option<&str> {
    e.details.as_ref().and_then(|d| d["field"].as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_times() {
        let w = When::of(1_700_000_000_123);
        assert_eq!(w.iso, "2023-11-14T22:13:20.123Z");
        assert_eq!(w.text, "2023-11-14 22:13 UTC");
    }
}
