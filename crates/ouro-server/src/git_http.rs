//! Smart HTTP for hosted repositories: `/git/{slug}/{name}.git/...` is served by running
//! `git http-backend` as a CGI program. The request body streams into its stdin and its stdout
//! streams back as the response (after the CGI header block), so neither direction is held in
//! memory. Gzip request bodies are passed through with `HTTP_CONTENT_ENCODING`, which
//! http-backend inflates itself.
//!
//! Authorization: the route guard (viewer; HTTP Basic with user name and an API token, a Bearer
//! token or a session; anonymous on public projects) and, for pushes, a developer check here.
//! Refusals are plain text; a missing or wrong credential is a 401 with `WWW-Authenticate`, so
//! git asks for a password.
//!
//! A push (`POST git-receive-pack`) holds the repository's push lock from before the refs are
//! read until the events are written: refs before, http-backend, refs after,
//! `ouro_code::push::record`. That work runs in its own task, so a client that disconnects
//! mid-push cannot leave moved refs without their `code.pushed` events.
//!
//! Push rules: every http-backend gets `core.hooksPath` (Ouro's one hooks directory) and, for
//! a push, `receive.maxInputSize` through `GIT_CONFIG_*` variables, plus `OURO_HOOK_DIR`, the
//! per-push FIFO channel of `ouro_code::hook`. While receive-pack runs, [`pre_receive`] answers
//! the hook: it runs `ouro_code::check` against the quarantined objects and accepts or refuses
//! (appending `code.push_rejected`).

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use ouro_code::repos;
use ouro_core::{ErrorCode, OuroError, Permission, Role};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use crate::AppState;
use crate::auth::{Principal, Via};
use crate::extract::{Ctx, Path};
use crate::registry::Registry;
use ouro_code::check;
use ouro_code::hook::HookDir;
use ouro_code::push_rules::PushRules;

/// The realm git shows when it asks for credentials.
pub const REALM: &str = "Basic realm=\"Ouro\"";
/// How long the push checks may take before the push is refused.
const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);
/// How long Ouro waits for the hook to read its answer.
const ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(30);
/// The CGI header block may not be larger than this.
const MAX_CGI_HEADER: usize = 64 * 1024;
const CHUNK: usize = 64 * 1024;

pub fn register(reg: &mut Registry) {
    let path = "/git/{slug}/{repo}/{*rest}";
    // Reading needs a viewer (the guard); pushing needs a developer, checked below because the
    // same `info/refs` path serves both (`?service=git-receive-pack`).
    reg.route(Method::GET, path, Permission::Project(Role::Viewer), serve)
        .doc("code", "git smart HTTP (clone, fetch; push advertisement)");
    reg.route(Method::POST, path, Permission::Project(Role::Viewer), serve)
        .doc("code", "git smart HTTP (upload-pack, receive-pack)");
}

/// What `ouro serve` says when the git CLI is missing.
pub const GIT_MISSING: &str = "Ouro needs the git command line tool (2.28 or newer) to host repositories, \
and `git --version` does not run. Install it (Debian/Ubuntu: apt-get install git; Fedora: dnf install git; \
Alpine: apk add git; macOS: xcode-select --install) and make sure it is on PATH, then start Ouro again.";

/// Checks that `git` runs; returns its version line, or [`GIT_MISSING`].
pub async fn require_git() -> Result<String, &'static str> {
    ouro_code::git::version().await.ok_or(GIT_MISSING)
}

/// True for paths of the git protocol (refusals there are plain text, 401 with `WWW-Authenticate`).
pub fn is_git_path(path: &str) -> bool {
    path.starts_with("/git/")
}

/// True for the one unsafe-method git request that only reads (a fetch negotiates over POST).
pub fn is_git_read_post(path: &str) -> bool {
    is_git_path(path) && path.ends_with("/git-upload-pack")
}

/// The refusal git clients understand: a status, a text message, and the Basic challenge on 401.
pub fn refusal(err: &OuroError) -> Response {
    let status =
        StatusCode::from_u16(err.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut res = (status, format!("{}\n", err.message)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        res.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(REALM));
    }
    res.extensions_mut().insert(err.code);
    res
}

fn wants_push(rest: &str, query: &str) -> bool {
    rest == "git-receive-pack"
        || (rest == "info/refs" && query.split('&').any(|kv| kv == "service=git-receive-pack"))
}

async fn serve(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, repo, rest)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    match run(st, ctx, repo, rest, req).await {
        Ok(r) => r,
        Err(e) => refusal(&e),
    }
}

async fn run(
    st: AppState,
    ctx: Ctx,
    repo: String,
    rest: String,
    req: Request,
) -> Result<Response, OuroError> {
    let project = ctx.project().map_err(|e| e.0)?.clone();
    let name = repo.strip_suffix(".git").unwrap_or(&repo);
    if rest.split('/').any(|s| s == ".." || s.is_empty()) {
        return Err(OuroError::new(ErrorCode::RouteNotFound, "no such git path"));
    }
    let query = req.uri().query().unwrap_or("").to_string();
    let push = wants_push(&rest, &query);
    if push {
        match &ctx.principal {
            None => {
                return Err(OuroError::new(
                    ErrorCode::AuthRequired,
                    "pushing needs a user name and an API token",
                ));
            }
            Some(Principal {
                via: Via::Token { scopes },
                ..
            }) if !scopes.iter().any(|s| s == "api") => {
                return Err(OuroError::new(
                    ErrorCode::InsufficientScope,
                    "this token has the read_api scope; pushing needs a token with the api scope",
                ));
            }
            _ => {}
        }
        if ctx.role().is_none_or(|r| r < Role::Developer) {
            return Err(OuroError::new(
                ErrorCode::Forbidden,
                format!(
                    "pushing to {:?} needs the developer role; you are {}",
                    project.slug,
                    ctx.role().map(|r| r.as_str()).unwrap_or("nobody")
                ),
            ));
        }
    }
    let repo = repos::by_name(&mut st.store.read().await?, project.id, name)
        .await?
        .ok_or_else(|| repos::not_found(name))?;
    if push && repo.kind == repos::RepoKind::Mirror {
        return Err(ouro_code::mirror::read_only(&repo));
    }
    let root = repos::root(&st.settings.data_dir);
    let dir = repo.dir(&root);
    let receive = push && req.method() == Method::POST;
    let protocol = req
        .headers()
        .get("git-protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let scratch = ouro_code::advertise::scratch_dir(&st.settings.data_dir);

    // The first request of a push: the refs, answered in process when git would answer the
    // same (ouro_code::advertise); otherwise http-backend below.
    if push && req.method() == Method::GET && !asks_protocol_version(&protocol) {
        let started = Instant::now();
        match ouro_code::advertise::receive_pack(&dir, &scratch).await {
            Ok(Some(a)) => {
                tracing::debug!(target: "ouro::push", repo = repo.id, us = started.elapsed().as_micros() as u64, "push advertisement answered in process");
                let mut res = Response::new(Body::from(a.body));
                append_headers(&mut res, a.headers);
                return Ok(res);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, repo = repo.id, "the push advertisement falls back to http-backend")
            }
        }
    }
    // A push's POST runs receive-pack directly (no http-backend in between) when the request is
    // the plain one http-backend would pass through: the right content type, not compressed, a
    // repository as Ouro set it up. The answer's headers are then the ones http-backend sends.
    let direct_headers = if receive
        && req
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v == "application/x-git-receive-pack-request")
        && req.headers().get(header::CONTENT_ENCODING).is_none()
        && ouro_code::advertise::plain_for_push(&dir)
    {
        ouro_code::advertise::template(&scratch).await.map(|t| {
            let mut h: Vec<(String, String)> = t
                .headers
                .iter()
                .filter(|(k, _)| !k.eq_ignore_ascii_case("content-type"))
                .cloned()
                .collect();
            h.push((
                "Content-Type".into(),
                "application/x-git-receive-pack-result".into(),
            ));
            h
        })
    } else {
        None
    };
    let started = Instant::now();

    // A push holds the repository's lock until its events are written (in the task below).
    let guard = if receive {
        Some(ouro_code::push::lock(&dir).lock_owned().await)
    } else {
        None
    };
    let before = if receive {
        Some(ouro_code::git::refs(&dir).await.map_err(git_error)?)
    } else {
        None
    };
    let rules = if receive {
        Some(ouro_code::push_rules::load(&mut st.store.read().await?, &repo).await?)
    } else {
        None
    };
    let hooks = ouro_code::hook::install(&st.settings.data_dir).map_err(|e| {
        tracing::error!(error = %e, "cannot write the hooks directory");
        OuroError::new(ErrorCode::GitFailed, "the server cannot prepare git hooks")
    })?;
    let mut hook = if receive {
        Some(
            HookDir::create(&ouro_code::hook::channels_dir(&st.settings.data_dir)).map_err(
                |e| {
                    tracing::error!(error = %e, "cannot create the hook channel");
                    OuroError::new(
                        ErrorCode::GitFailed,
                        "the server cannot prepare the push check",
                    )
                },
            )?,
        )
    } else {
        None
    };

    let (parts, body) = req.into_parts();
    let header = |h: &str| {
        parts
            .headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let user = ctx
        .principal
        .as_ref()
        .map(|p| p.user.name.clone())
        .unwrap_or_default();
    let mut cmd = if direct_headers.is_some() {
        let mut c = ouro_code::git::receive_pack(&["--stateless-rpc", "."]);
        c.current_dir(&dir);
        if !protocol.is_empty() {
            c.env("GIT_PROTOCOL", &protocol);
        }
        // The identity http-backend gives receive-pack for the reflog.
        let who = if user.is_empty() { "anonymous" } else { &user };
        if std::env::var_os("GIT_COMMITTER_NAME").is_none() {
            c.env("GIT_COMMITTER_NAME", who);
        }
        if std::env::var_os("GIT_COMMITTER_EMAIL").is_none() {
            let host = if ctx.client_ip.is_empty() {
                "(none)"
            } else {
                &ctx.client_ip
            };
            c.env("GIT_COMMITTER_EMAIL", format!("{who}@http.{host}"));
        }
        c
    } else {
        let mut c = ouro_code::git::http_backend();
        c.env("GIT_PROJECT_ROOT", &root)
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env(
                "PATH_INFO",
                format!("/{}/{}.git/{rest}", repo.project_id, repo.id),
            )
            .env("REQUEST_METHOD", parts.method.as_str())
            .env("QUERY_STRING", &query)
            .env("CONTENT_TYPE", header("content-type"))
            .env("REMOTE_ADDR", &ctx.client_ip)
            .env("SERVER_PROTOCOL", "HTTP/1.1");
        let length = header("content-length");
        if !length.is_empty() {
            c.env("CONTENT_LENGTH", length);
        }
        let encoding = header("content-encoding");
        if !encoding.is_empty() {
            c.env("HTTP_CONTENT_ENCODING", encoding);
        }
        if !protocol.is_empty() {
            c.env("HTTP_GIT_PROTOCOL", &protocol);
        }
        if !user.is_empty() {
            c.env("REMOTE_USER", &user);
        }
        c
    };
    // Ouro's hooks, never the repository's own; a push's size limit.
    let mut config = vec![("core.hooksPath", hooks.to_string_lossy().into_owned())];
    if let Some(rules) = &rules {
        let max = rules
            .max_push_bytes
            .map(|v| v as u64)
            .unwrap_or(st.settings.push_max_bytes);
        config.push(("receive.maxInputSize", max.to_string()));
        // Housekeeping runs after the response instead (below): the pusher does not wait for
        // git to decide whether it is due.
        config.push(("receive.autogc", "false".into()));
    }
    cmd.env("GIT_CONFIG_COUNT", config.len().to_string());
    for (i, (k, v)) in config.iter().enumerate() {
        cmd.env(format!("GIT_CONFIG_KEY_{i}"), k)
            .env(format!("GIT_CONFIG_VALUE_{i}"), v);
    }
    if let Some(h) = &hook {
        cmd.env("OURO_HOOK_DIR", h.path());
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // The task below waits for it; on shutdown an orphan must not linger.
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| {
        OuroError::new(
            ErrorCode::GitFailed,
            format!("cannot run git http-backend: {e}"),
        )
    })?;

    // Request body -> stdin, chunk by chunk. A client that goes away closes stdin early; git
    // then refuses the incomplete request and changes nothing.
    let mut stdin = child.stdin.take().expect("piped stdin");
    // Bytes of the request body, to tell a push refused for its size (receive.maxInputSize).
    let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = received.clone();
    tokio::spawn(async move {
        let mut chunks = body.into_data_stream();
        while let Some(chunk) = chunks.next().await {
            let Ok(chunk) = chunk else { break };
            counter.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
            if stdin.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = stdin.shutdown().await;
    });
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                tracing::warn!(target: "ouro::git", "http-backend: {l}");
            }
        });
    }
    let actor = ctx.actor();
    // Aborted (and its channel removed) when dropped: also if this request fails below.
    let hook_task = match (hook.take(), &rules) {
        (Some(h), Some(rules)) => Some(AbortOnDrop(Some(tokio::spawn(pre_receive(
            st.clone(),
            h,
            Pusher {
                dir: dir.clone(),
                repo: repo.clone(),
                slug: project.slug.clone(),
                actor: actor.clone(),
                role: ctx.role(),
                rules: rules.clone(),
                had_branches: before
                    .as_ref()
                    .is_some_and(|b| b.keys().any(|r| r.starts_with("refs/heads/"))),
                started,
            },
        ))))),
        _ => None,
    };

    let mut stdout = BufReader::with_capacity(CHUNK, child.stdout.take().expect("piped stdout"));
    let (status, headers) = match direct_headers {
        Some(h) => (StatusCode::OK, h),
        None => read_cgi_headers(&mut stdout).await?,
    };

    // stdout -> response body, through a small bounded channel (backpressure, no buffering).
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    // A push over the size limit gets Ouro's explanation next to git's own refusal.
    let mut notice = rules.as_ref().map(|r| SizeNotice {
        max: r
            .max_push_bytes
            .map(|v| v as u64)
            .unwrap_or(st.settings.push_max_bytes),
        received: received.clone(),
        pending: Vec::new(),
        sideband: false,
        unpack_failed: false,
        passthrough: false,
    });
    tokio::spawn(async move {
        let mut client_gone = false;
        loop {
            let mut buf = vec![0u8; CHUNK];
            match stdout.read(&mut buf).await {
                Ok(0) => {
                    if let Some(rest) = notice.as_mut().map(SizeNotice::finish)
                        && !rest.is_empty()
                        && !client_gone
                    {
                        let _ = tx.send(Ok(Bytes::from(rest))).await;
                    }
                    break;
                }
                Ok(n) => {
                    buf.truncate(n);
                    if let Some(nt) = notice.as_mut() {
                        buf = nt.feed(&buf);
                        if buf.is_empty() {
                            continue;
                        }
                    }
                    if !client_gone && tx.send(Ok(Bytes::from(buf))).await.is_err() {
                        // Keep draining so git finishes (or stops) on its own.
                        client_gone = true;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    break;
                }
            }
        }
        let _ = child.wait().await;
        let repo_id = repo.id;
        let step = |what: &str| {
            if receive {
                tracing::debug!(target: "ouro::push", repo = repo_id, ms = started.elapsed().as_secs_f64() * 1000.0, "{what}");
            }
        };
        step("git finished");
        // receive-pack is done: a hook that never ran (nothing to update) is not waited for,
        // and dropping the channel removes its FIFOs.
        if let Some(t) = hook_task.and_then(|mut t| t.0.take()) {
            t.abort();
            let _ = t.await;
        }
        let max = rules.as_ref().map(|r| {
            r.max_push_bytes
                .map(|v| v as u64)
                .unwrap_or(st.settings.push_max_bytes)
        });
        // A body over the limit that moved no ref: receive-pack refused the pack for its size
        // (the pusher saw git's "pack exceeds maximum allowed size").
        let pushed = before.is_some();
        if let (Some(max), Some(before)) = (max, &before)
            && received.load(std::sync::atomic::Ordering::Relaxed) > max
            && ouro_code::git::refs(&dir)
                .await
                .is_ok_and(|now| &now == before)
        {
            let v = check::Violation {
                refname: String::new(),
                rule: "limit.push_size".into(),
                message: check::push_size_lines(max)[0]
                    .trim_start_matches("ouro: ")
                    .to_string(),
            };
            if let Err(e) =
                check::record_rejection(&st.store, &repo, &project.slug, &actor, &[], &[v]).await
            {
                tracing::error!(error = %e, repo = repo.id, "recording a refused push failed");
            }
        }
        let moved = match before {
            Some(before) => {
                match record_push(&st, &dir, &repo, &project.slug, &actor, &before).await {
                    Ok(moved) => moved,
                    Err(e) => {
                        tracing::error!(error = %e, repo = repo.id, "recording a push failed");
                        Default::default()
                    }
                }
            }
            None => Default::default(),
        };
        step("code.pushed recorded");
        // Open change requests whose source or target this push moved get the new head (and
        // their gate re-runs) before the pusher has the answer: once `git push` returns, the CR
        // and its events show the push. With no such CR this is one query and no git process.
        if !moved.is_empty()
            && let Err(e) = ouro_code::cr::refresh_branches(
                &st.store,
                &repos::root(&st.settings.data_dir),
                &repo,
                &project.slug,
                &moved,
            )
            .await
        {
            tracing::error!(error = %e, repo = repo.id, "refreshing change requests after a push failed");
        }
        step("change requests refreshed; answer ends");
        drop(guard);
        drop(tx);
        if pushed && ouro_code::git::housekeeping_may_be_due(&dir) {
            // What `receive.autogc` would have done, once the pusher has the answer: pack loose
            // objects when git finds enough of them (git takes its own locks).
            let d = dir.to_string_lossy().into_owned();
            if let Err(e) =
                ouro_code::git::run(&["-C", &d, "maintenance", "run", "--auto", "--quiet"]).await
            {
                tracing::warn!(error = %e, repo = repo.id, "git maintenance after a push failed");
            }
        }
    });

    let mut res = Response::new(Body::from_stream(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    ));
    *res.status_mut() = status;
    append_headers(&mut res, headers);
    Ok(res)
}

fn append_headers(res: &mut Response, headers: Vec<(String, String)>) {
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            header::HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(&v),
        ) {
            res.headers_mut().append(k, v);
        }
    }
}

/// Whether the client asks for protocol version 1 or 2 (`Git-Protocol: version=2`): http-backend
/// answers those itself (git's push client asks for neither).
fn asks_protocol_version(header: &str) -> bool {
    header
        .split(':')
        .filter_map(|kv| kv.strip_prefix("version="))
        .any(|v| v != "0")
}

/// Reads receive-pack's answer (pkt-lines) as it streams through and, when the push was refused
/// for its size (`receive.maxInputSize`: the body was over the limit and the unpack failed),
/// adds Ouro's lines on side band 2 just before the final flush, so the pusher reads them as
/// `remote:` lines after git's own `fatal: pack exceeds maximum allowed size`. Anything that
/// does not parse as pkt-lines is passed through unchanged.
struct SizeNotice {
    max: u64,
    received: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Bytes of an incomplete packet.
    pending: Vec<u8>,
    sideband: bool,
    unpack_failed: bool,
    passthrough: bool,
}

impl SizeNotice {
    /// Takes a chunk of the answer; returns what can be forwarded now.
    fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.passthrough {
            return chunk.to_vec();
        }
        self.pending.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(self.pending.len());
        let mut at = 0;
        while self.pending.len() - at >= 4 {
            let len = std::str::from_utf8(&self.pending[at..at + 4])
                .ok()
                .and_then(|h| usize::from_str_radix(h, 16).ok());
            let Some(len) = len else {
                self.passthrough = true;
                out.extend_from_slice(&self.pending[at..]);
                self.pending.clear();
                return out;
            };
            if len == 0 {
                if self.sideband
                    && self.unpack_failed
                    && self.received.load(std::sync::atomic::Ordering::Relaxed) > self.max
                {
                    for line in check::push_size_lines(self.max) {
                        let payload = format!("\u{2}{line}\n");
                        out.extend_from_slice(format!("{:04x}", payload.len() + 4).as_bytes());
                        out.extend_from_slice(payload.as_bytes());
                    }
                    // Once.
                    self.unpack_failed = false;
                }
                out.extend_from_slice(b"0000");
                at += 4;
                continue;
            }
            if len < 4 {
                out.extend_from_slice(&self.pending[at..at + 4]);
                at += 4;
                continue;
            }
            if self.pending.len() - at < len {
                break;
            }
            let packet = &self.pending[at..at + len];
            if packet.get(4) == Some(&1) {
                self.sideband = true;
                let data = &packet[5..];
                let has = |needle: &[u8]| data.windows(needle.len()).any(|w| w == needle);
                if has(b"unpack ") && !has(b"unpack ok") {
                    self.unpack_failed = true;
                }
            }
            out.extend_from_slice(packet);
            at += len;
        }
        self.pending.drain(..at);
        out
    }

    /// What is left at the end of the answer.
    fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }
}

/// A task that is aborted when this is dropped.
struct AbortOnDrop<T>(Option<tokio::task::JoinHandle<T>>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            t.abort();
        }
    }
}

/// Who pushes where, for the pre-receive checks.
struct Pusher {
    dir: std::path::PathBuf,
    repo: repos::Repo,
    slug: String,
    actor: ouro_core::Actor,
    role: Option<Role>,
    rules: PushRules,
    /// Whether the repository had any branch before the push.
    had_branches: bool,
    /// When receive-pack was started (for the debug timings).
    started: Instant,
}

/// Answers the pre-receive hook of one push: waits for its request, runs the checks, appends
/// `code.push_rejected` on a refusal and writes the verdict. Any failure on Ouro's side refuses
/// the push. Returns the channel so the caller drops (removes) it.
async fn pre_receive(st: AppState, mut hook: HookDir, p: Pusher) -> HookDir {
    let step = |what: &str| {
        tracing::debug!(target: "ouro::push", repo = p.repo.id, ms = p.started.elapsed().as_secs_f64() * 1000.0, "{what}");
    };
    let req = match hook.receive().await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, repo = p.repo.id, "the pre-receive hook sent a bad request");
            let lines = vec![
                "ouro: push refused: the push check could not read the push; nothing was changed."
                    .to_string(),
            ];
            let _ = hook.respond(&lines, false, ANSWER_WAIT).await;
            return hook;
        }
    };
    step("the hook's request arrived");
    let ctx = check::Context {
        role: p.role,
        rules: &p.rules,
        max_file_bytes: p
            .rules
            .max_file_bytes
            .map(|v| v as u64)
            .unwrap_or(st.settings.push_max_file_bytes),
        initial_push: !p.had_branches,
        scratch: Some(hook.path()),
    };
    let internal = |why: &str| check::Violation {
        refname: String::new(),
        rule: "internal".into(),
        message: format!(
            "the push check {why} on the server; nothing was changed. Try again, or ask an administrator."
        ),
    };
    let violations = match tokio::time::timeout(CHECK_TIMEOUT, check::run(&p.dir, &req, &ctx)).await
    {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            tracing::error!(error = %e, repo = p.repo.id, "the push check failed");
            vec![internal("failed")]
        }
        Err(_) => vec![internal("took too long")],
    };
    step("push checks done");
    let accept = violations.is_empty();
    let lines = if accept {
        Vec::new()
    } else {
        if let Err(e) = check::record_rejection(
            &st.store,
            &p.repo,
            &p.slug,
            &p.actor,
            &req.updates,
            &violations,
        )
        .await
        {
            tracing::error!(error = %e, repo = p.repo.id, "recording a refused push failed");
        }
        check::refusal_lines(&violations)
    };
    if let Err(e) = hook.respond(&lines, accept, ANSWER_WAIT).await {
        tracing::error!(error = %e, repo = p.repo.id, "the pre-receive hook did not take its answer");
    }
    step("verdict written to the hook");
    hook
}

/// Records what the push moved (`code.pushed`) and returns the branches it moved: open change
/// requests on them get the new head (and their gate re-runs) next.
async fn record_push(
    st: &AppState,
    dir: &std::path::Path,
    repo: &repos::Repo,
    slug: &str,
    actor: &ouro_core::Actor,
    before: &BTreeMap<String, String>,
) -> Result<std::collections::BTreeSet<String>, OuroError> {
    let after = ouro_code::git::refs(dir).await.map_err(git_error)?;
    ouro_code::push::record(&st.store, dir, repo, slug, actor, before, &after).await?;
    // The branches this push moved (created, moved or deleted).
    Ok(before
        .iter()
        .filter(|(r, id)| after.get(*r) != Some(*id))
        .chain(after.iter().filter(|(r, _)| !before.contains_key(*r)))
        .filter_map(|(r, _)| r.strip_prefix("refs/heads/").map(String::from))
        .collect())
}

fn git_error(e: ouro_code::git::GitError) -> OuroError {
    tracing::error!(error = %e, "git failed");
    OuroError::new(ErrorCode::GitFailed, "a git command failed on the server")
}

/// Reads the CGI header block (`Name: value` lines up to an empty line). `Status: 404 Not
/// Found` sets the status; everything else is passed on.
async fn read_cgi_headers<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
) -> Result<(StatusCode, Vec<(String, String)>), OuroError> {
    let bad = |m: &str| {
        tracing::error!("git http-backend: {m}");
        OuroError::new(ErrorCode::GitFailed, "git http-backend answered badly")
    };
    let mut status = StatusCode::OK;
    let mut headers = Vec::new();
    let mut total = 0;
    loop {
        let mut line = Vec::new();
        let n = r
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| bad(&e.to_string()))?;
        if n == 0 {
            return Err(bad("ended before its headers did"));
        }
        total += n;
        if total > MAX_CGI_HEADER {
            return Err(bad("header block too large"));
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        if text.is_empty() {
            break;
        }
        let Some((k, v)) = text.split_once(':') else {
            return Err(bad("a header line without ':'"));
        };
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case("status") {
            let code = v.split_whitespace().next().unwrap_or("");
            status = code
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .ok_or_else(|| bad("an invalid Status"))?;
        } else {
            headers.push((k.to_string(), v.to_string()));
        }
    }
    Ok((status, headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cgi_headers_set_status_and_pass_the_rest() {
        let mut input: &[u8] =
            b"Status: 404 Not Found\r\nContent-Type: text/plain\r\nExpires: 0\r\n\r\nbody";
        let (status, headers) = read_cgi_headers(&mut input).await.unwrap();
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(headers.len(), 2);
        assert_eq!(headers[0], ("Content-Type".into(), "text/plain".into()));
        assert_eq!(input, b"body");
        let mut cut: &[u8] = b"Content-Type: x\r\n";
        assert!(read_cgi_headers(&mut cut).await.is_err());
    }

    #[test]
    fn push_is_recognised() {
        assert!(wants_push("git-receive-pack", ""));
        assert!(wants_push("info/refs", "service=git-receive-pack"));
        assert!(!wants_push("info/refs", "service=git-upload-pack"));
        assert!(!wants_push("git-upload-pack", ""));
    }
}
