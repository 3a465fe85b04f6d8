//! Build: artifacts and caches. Users list and download a run's artifacts (Viewer); runners
//! upload artifacts, fetch the artifacts of needed jobs, and restore and save caches under
//! `/api/v1/runner/jobs/{job_id}/...`, authenticated by the job's attempt token in the
//! `Ouro-Attempt-Token` header (a token that is not the running attempt's: 409
//! build.stale_attempt). Bodies are streamed to and from the blob store. Domain logic:
//! `ouro_build::artifacts` and `ouro_build::cache`.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use ouro_build::artifacts::{self, Artifact, NeededArtifact, TOKEN_HEADER, Upload};
use ouro_build::blobs::BlobStore;
use ouro_build::cache;
use ouro_build::runs::{self, Job};
use ouro_core::{ErrorCode, OuroError, Permission, Role};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Ctx, Json, Path, Query};
use crate::registry::Registry;

pub fn register(reg: &mut Registry) {
    let viewer = Permission::Project(Role::Viewer);
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/pipelines/{number}/artifacts",
        viewer,
        list,
    )
    .doc(
        "build",
        "A run's artifacts by job and path, with sizes and expiry (`expired` ones are removed by the garbage collector)",
    )
    .response::<ArtifactList>(200);
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/pipelines/{number}/artifacts/{id}",
        viewer,
        download,
    )
    .doc(
        "build",
        "Download one artifact (streamed, `Content-Disposition: attachment`); 404 build.artifact_not_found when it does not exist or expired",
    );
    reg.route(
        Method::PUT,
        "/api/v1/runner/jobs/{job_id}/artifacts/{*path}",
        Permission::Public,
        upload,
    )
    .doc(
        "runner",
        "Upload an artifact of the running job: the raw file as the body, the path relative to the workspace; `Ouro-Attempt-Token` header; `?expire_in=` (e.g. `1 week`). 409 build.stale_attempt, 413 build.artifact_too_large, 507 build.storage_full",
    )
    .query("expire_in", "How long the artifact is kept (`30 days`, `2h`, `never`; default: the server setting)")
    .response::<Artifact>(201);
    reg.route(
        Method::GET,
        "/api/v1/runner/jobs/{job_id}/needed-artifacts",
        Permission::Public,
        needed,
    )
    .doc(
        "runner",
        "The artifacts of the jobs the running job needs (`Ouro-Attempt-Token` header); download each from `needed-artifacts/{id}`",
    )
    .response::<NeededList>(200);
    reg.route(
        Method::GET,
        "/api/v1/runner/jobs/{job_id}/needed-artifacts/{id}",
        Permission::Public,
        needed_download,
    )
    .doc(
        "runner",
        "Download an artifact of a job the running job needs (`Ouro-Attempt-Token` header)",
    );
    reg.route(
        Method::GET,
        "/api/v1/runner/jobs/{job_id}/cache",
        Permission::Public,
        cache_get,
    )
    .doc(
        "runner",
        "Restore a cache: the exact `key`, else the newest entry starting with one of `restore_keys` (newline-separated, in order). 200 with the archive (headers `Ouro-Cache-Key`, `Ouro-Cache-Exact`, `Ouro-Cache-Sha256`), 204 on a miss",
    )
    .query("key", "The rendered cache key")
    .query("restore_keys", "Key prefixes, newline-separated, tried in order");
    reg.route(
        Method::PUT,
        "/api/v1/runner/jobs/{job_id}/cache",
        Permission::Public,
        cache_put,
    )
    .doc(
        "runner",
        "Save a cache archive (the body) under `key` unless the key exists; least recently used entries beyond the project's quota are evicted. 201 `{\"saved\", \"evicted\"}`",
    )
    .query("key", "The rendered cache key")
    .response::<cache::Saved>(201);
}

/// A run's artifacts.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ArtifactList {
    pub artifacts: Vec<Artifact>,
}

/// The artifacts a job gets from the jobs it needs.
#[derive(Debug, Serialize, JsonSchema)]
pub struct NeededList {
    pub artifacts: Vec<NeededArtifact>,
}

async fn run_of(st: &AppState, ctx: &Ctx, number: i64) -> Result<runs::Run, ApiError> {
    let mut c = st.store.read().await?;
    Ok(runs::get(&mut c, ctx.project()?.id, number).await?)
}

async fn list(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, number)): Path<(String, i64)>,
) -> ApiResult<Json<ArtifactList>> {
    let run = run_of(&st, &ctx, number).await?;
    let mut c = st.store.read().await?;
    Ok(Json(ArtifactList {
        artifacts: artifacts::list_for_run(&mut c, run.id).await?,
    }))
}

fn expired(id: i64) -> ApiError {
    ApiError(OuroError::new(
        ErrorCode::ArtifactNotFound,
        format!("artifact {id} has expired"),
    ))
}

/// The blob as a streamed body (read on a blocking thread).
pub(crate) async fn blob_body(blobs: Arc<dyn BlobStore>, sha256: String) -> Result<Body, ApiError> {
    let sha = sha256.clone();
    let reader = tokio::task::spawn_blocking(move || blobs.open(&sha))
        .await
        .map_err(|_| ApiError(OuroError::internal()))?
        .map_err(OuroError::from)?;
    let Some(mut reader) = reader else {
        tracing::error!(sha256 = %sha256, "an artifact's blob is missing");
        return Err(ApiError(OuroError::new(
            ErrorCode::ArtifactNotFound,
            "the artifact's content is missing from the store",
        )));
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if tx
                        .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
                        .is_err()
                    {
                        return; // the client went away
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    Ok(Body::from_stream(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    ))
}

fn attachment(body: Body, path: &str, size: i64) -> Response {
    let name = path.rsplit('/').next().unwrap_or(path);
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&crate::api::attachments::disposition(name)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(size.max(0) as u64),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}

/// Streams one artifact of run `number` (the user download; the UI links here too).
pub(crate) async fn send_artifact(
    st: &AppState,
    ctx: &Ctx,
    number: i64,
    id: i64,
) -> Result<Response, ApiError> {
    let run = run_of(st, ctx, number).await?;
    let a = artifacts::get(&mut st.store.read().await?, run.id, id).await?;
    if a.expired {
        return Err(expired(id));
    }
    let body = blob_body(st.blobs.clone(), a.sha256.clone()).await?;
    Ok(attachment(body, &a.path, a.size))
}

async fn download(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, number, id)): Path<(String, i64, i64)>,
) -> ApiResult<Response> {
    send_artifact(&st, &ctx, number, id).await
}

// ---------------------------------------------------------------------------------------------
// Runner side

fn token(headers: &HeaderMap) -> Result<String, ApiError> {
    headers
        .get(TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(String::from)
        .ok_or_else(|| {
            ApiError(OuroError::new(
                ErrorCode::StaleAttempt,
                "send the job's attempt token in the Ouro-Attempt-Token header",
            ))
        })
}

async fn attempt(st: &AppState, job_id: i64, headers: &HeaderMap) -> Result<Job, ApiError> {
    let t = token(headers)?;
    Ok(runs::check_attempt(&mut st.store.read().await?, job_id, &t).await?)
}

/// A blocking reader over the request body's chunks (fed by the handler).
struct ChannelReader {
    rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
    cur: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}

/// Runs `consume` over a reader of `body`, feeding it chunk by chunk (bounded memory).
async fn with_body<T, F>(body: Body, consume: F) -> T
where
    F: FnOnce(Box<dyn Read + Send>) -> futures::future::BoxFuture<'static, T>,
{
    let (tx, rx) = mpsc::channel(4);
    let reader = ChannelReader {
        rx,
        cur: Bytes::new(),
    };
    let feed = async move {
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let item = chunk.map_err(std::io::Error::other);
            let stop = item.is_err();
            if tx.send(item).await.is_err() || stop {
                return; // the consumer stopped (limit, full store)
            }
        }
    };
    let (_, out) = tokio::join!(feed, consume(Box::new(reader)));
    out
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadQuery {
    expire_in: Option<String>,
}

async fn upload(
    State(st): State<AppState>,
    Path((job_id, path)): Path<(i64, String)>,
    Query(qy): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<impl IntoResponse> {
    let t = token(&headers)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > st.settings.artifacts.max_file_bytes) {
        return Err(ApiError(OuroError::new(
            ErrorCode::ArtifactTooLarge,
            format!(
                "the artifact is larger than the limit of {} bytes per file",
                st.settings.artifacts.max_file_bytes
            ),
        )));
    }
    let (store, blobs, settings) = (
        st.store.clone(),
        st.blobs.clone(),
        st.settings.artifacts.clone(),
    );
    let a = with_body(body, move |reader| {
        Box::pin(async move {
            artifacts::store_upload(
                &store,
                blobs,
                &settings,
                Upload {
                    job_id,
                    token: &t,
                    path: &path,
                    expire_in: qy.expire_in.as_deref(),
                },
                reader,
            )
            .await
        })
    })
    .await?;
    Ok((StatusCode::CREATED, Json(a)))
}

async fn needed(
    State(st): State<AppState>,
    Path(job_id): Path<i64>,
    headers: HeaderMap,
) -> ApiResult<Json<NeededList>> {
    let job = attempt(&st, job_id, &headers).await?;
    let list = artifacts::needed(&mut st.store.read().await?, &job).await?;
    Ok(Json(NeededList {
        artifacts: list
            .into_iter()
            .map(|a| NeededArtifact {
                id: a.id,
                job: a.job,
                path: a.path,
                sha256: a.sha256,
                size: a.size,
            })
            .collect(),
    }))
}

async fn needed_download(
    State(st): State<AppState>,
    Path((job_id, id)): Path<(i64, i64)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let job = attempt(&st, job_id, &headers).await?;
    let list = artifacts::needed(&mut st.store.read().await?, &job).await?;
    let a = list.into_iter().find(|a| a.id == id).ok_or_else(|| {
        ApiError(OuroError::new(
            ErrorCode::ArtifactNotFound,
            format!("artifact {id} is not an artifact of a job this job needs"),
        ))
    })?;
    let body = blob_body(st.blobs.clone(), a.sha256.clone()).await?;
    Ok(attachment(body, &a.path, a.size))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheQuery {
    key: Option<String>,
    restore_keys: Option<String>,
}

fn key_of(q: &CacheQuery) -> Result<String, ApiError> {
    let key = q.key.clone().unwrap_or_default();
    cache::check_key(&key)?;
    Ok(key)
}

async fn project_of(st: &AppState, job: &Job) -> Result<i64, ApiError> {
    Ok(runs::run_by_id(&mut st.store.read().await?, job.run_id)
        .await?
        .project_id)
}

async fn cache_get(
    State(st): State<AppState>,
    Path(job_id): Path<i64>,
    Query(qy): Query<CacheQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let job = attempt(&st, job_id, &headers).await?;
    let key = key_of(&qy)?;
    let restore: Vec<String> = qy
        .restore_keys
        .as_deref()
        .unwrap_or("")
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    let project = project_of(&st, &job).await?;
    let Some(hit) = cache::lookup(&st.store, project, &key, &restore).await? else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let body = blob_body(st.blobs.clone(), hit.entry.sha256.clone()).await?;
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zstd"),
    );
    h.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(hit.entry.size.max(0) as u64),
    );
    if let Ok(v) = HeaderValue::from_str(&hit.entry.key) {
        h.insert("ouro-cache-key", v);
    }
    h.insert(
        "ouro-cache-exact",
        HeaderValue::from_static(if hit.exact { "true" } else { "false" }),
    );
    if let Ok(v) = HeaderValue::from_str(&hit.entry.sha256) {
        h.insert("ouro-cache-sha256", v);
    }
    Ok(res)
}

async fn cache_put(
    State(st): State<AppState>,
    Path(job_id): Path<i64>,
    Query(qy): Query<CacheQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<impl IntoResponse> {
    let job = attempt(&st, job_id, &headers).await?;
    let key = key_of(&qy)?;
    let project = project_of(&st, &job).await?;
    let (store, blobs, settings) = (
        st.store.clone(),
        st.blobs.clone(),
        st.settings.artifacts.clone(),
    );
    let saved = with_body(body, move |reader| {
        Box::pin(async move {
            artifacts::save_cache_file(&store, blobs, &settings, project, &key, reader).await
        })
    })
    .await?;
    Ok((StatusCode::CREATED, Json(saved)))
}

/// The periodic garbage collection of expired artifacts and unreferenced blobs.
pub async fn gc_task(state: AppState) {
    let mut shutdown = state.shutting_down.clone();
    let every = Duration::from_secs(state.settings.artifacts.gc_interval_secs.max(60));
    let mut wait = Duration::from_secs(90);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        wait = every;
        let now = ouro_core::time::now_ms();
        match artifacts::gc(
            &state.store,
            state.blobs.clone(),
            now,
            artifacts::GC_GRACE_MS,
        )
        .await
        {
            Ok(r) if r.rows > 0 || r.blobs > 0 => tracing::info!(
                rows = r.rows,
                blobs = r.blobs,
                bytes = r.bytes,
                "removed expired artifacts and unused blobs"
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "artifact garbage collection failed; trying again later")
            }
        }
    }
}
