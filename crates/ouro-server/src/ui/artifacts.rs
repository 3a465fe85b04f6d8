//! Build: a run's artifacts in the web UI (`/projects/{slug}/pipelines/{number}/artifacts`): per
//! job, each file with its size, expiry and a download link (expired ones marked, without a
//! link). Downloads are streamed by `api::artifacts`. The run page links here.

use askama::Template;
use axum::extract::State;
use axum::http::Method;
use ouro_build::artifacts;
use ouro_build::runs;
use ouro_core::{Permission, Role};
use ouro_store::projects::Project;

use crate::AppState;
use crate::extract::{Ctx, Path};
use crate::registry::Registry;
use crate::ui::common::{When, fail};
use crate::ui::projects::{PHASES, PhaseLink};
use crate::ui::{Chrome, UiResult, render};

pub fn register(reg: &mut Registry) {
    reg.route(
        Method::GET,
        "/projects/{slug}/pipelines/{number}/artifacts",
        Permission::Project(Role::Viewer),
        show,
    );
    reg.route(
        Method::GET,
        "/projects/{slug}/pipelines/{number}/artifacts/{id}",
        Permission::Project(Role::Viewer),
        download,
    );
}

/// `1536` -> `1.5 KiB`.
pub fn human_size(bytes: i64) -> String {
    let units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

pub struct FileRow {
    pub id: i64,
    pub path: String,
    pub size: String,
    pub expired: bool,
    pub expires: Option<When>,
}

pub struct JobArtifacts {
    pub job: String,
    pub total: String,
    pub files: Vec<FileRow>,
}

#[derive(Template)]
#[template(path = "build_artifacts.html")]
struct Page<'a> {
    chrome: Chrome,
    project: &'a Project,
    phases: &'static [PhaseLink],
    active: &'static str,
    manage: bool,
    number: i64,
    pipeline: String,
    jobs: Vec<JobArtifacts>,
}

async fn show(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, number)): Path<(String, i64)>,
) -> UiResult {
    let project = ctx.project()?;
    let mut c = st.store.read().await.map_err(|e| fail(&ctx, e))?;
    let run = runs::get(&mut c, project.id, number)
        .await
        .map_err(|e| fail(&ctx, e))?;
    let list = artifacts::list_for_run(&mut c, run.id)
        .await
        .map_err(|e| fail(&ctx, e))?;
    let mut jobs: Vec<(JobArtifacts, i64)> = Vec::new();
    for a in list {
        let row = FileRow {
            id: a.id,
            path: a.path,
            size: human_size(a.size),
            expired: a.expired,
            expires: a.expires_at.map(When::of),
        };
        match jobs.last_mut() {
            Some((j, total)) if j.job == a.job => {
                j.files.push(row);
                *total += a.size;
            }
            _ => jobs.push((
                JobArtifacts {
                    job: a.job,
                    total: String::new(),
                    files: vec![row],
                },
                a.size,
            )),
        }
    }
    let p = Page {
        chrome: Chrome::of(&ctx),
        project,
        phases: PHASES,
        active: "pipelines",
        manage: ctx.role() >= Some(Role::Maintainer),
        number,
        pipeline: run.pipeline,
        jobs: jobs
            .into_iter()
            .map(|(mut j, t)| {
                j.total = human_size(t);
                j
            })
            .collect(),
    };
    Ok(render(&p))
}

async fn download(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, number, id)): Path<(String, i64, i64)>,
) -> UiResult {
    crate::api::artifacts::send_artifact(&st, &ctx, number, id)
        .await
        .map_err(|e| fail(&ctx, e.0))
}
