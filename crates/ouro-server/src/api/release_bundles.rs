//! Release: the instance's release signing public key, and a release's signed bundle
//! (`{project}-{version}.tar.zst`, streamed from the blob store). Domain logic:
//! `ouro_release::bundle` and `ouro_release::signing`.

use axum::extract::State;
use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use ouro_core::{ErrorCode, OuroError, Permission, Role};
use ouro_release::{bundle, signing};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Ctx, Json, Path};
use crate::registry::Registry;

pub fn register(reg: &mut Registry) {
    reg.route(
        Method::GET,
        "/api/v1/release-signing-key",
        Permission::Authenticated,
        signing_key,
    )
    .doc(
        "release",
        "The Ed25519 public key that signs this instance's release bundles (64 hex digits); pin it with `ouro release verify BUNDLE --key HEX`. The key is created on first use; 500 release.signing_key_unavailable when its file is unreadable",
    )
    .response::<SigningKeyInfo>(200);
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/releases/{version}/bundle",
        Permission::Project(Role::Viewer),
        download,
    )
    .doc(
        "release",
        "Download a release's signed bundle (`{project}-{version}.tar.zst`: manifest.json, manifest.sig, manifest.pub and files/...; streamed, `Content-Disposition: attachment`); check it with `ouro release verify`. 404 release.bundle_not_found when the release does not exist or is not bundled yet",
    );
}

/// The release signing public key.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct SigningKeyInfo {
    /// `ed25519`.
    pub algorithm: String,
    /// The public key, 64 lowercase hex digits.
    pub public_key: String,
}

/// The instance's release signing key (created in the data dir on first use).
pub(crate) async fn load_key(st: &AppState) -> Result<signing::SigningKey, ApiError> {
    let dir = st.settings.data_dir.clone();
    Ok(
        tokio::task::spawn_blocking(move || signing::load_or_create(&dir))
            .await
            .map_err(|_| ApiError(OuroError::internal()))??,
    )
}

async fn signing_key(State(st): State<AppState>) -> ApiResult<Json<SigningKeyInfo>> {
    let key = load_key(&st).await?;
    Ok(Json(SigningKeyInfo {
        algorithm: "ed25519".into(),
        public_key: signing::public_key_hex(&key),
    }))
}

async fn download(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, version)): Path<(String, String)>,
) -> ApiResult<Response> {
    let project = ctx.project()?;
    let found = bundle::find(&mut st.store.read().await?, &project.slug, &version).await?;
    let Some((name, b)) = found else {
        return Err(ApiError(OuroError::new(
            ErrorCode::ReleaseBundleNotFound,
            format!("release {version} has no bundle (it does not exist or is not bundled yet)"),
        )));
    };
    let body = crate::api::artifacts::blob_body(st.blobs.clone(), b.sha256.clone()).await?;
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zstd"),
    );
    // `file_name` keeps only `A-Za-z0-9._+-`: safe inside the quotes.
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(b.size));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(res)
}
