//! Code: merge rules per target-branch pattern on the merge rules page
//! (`templates/code_merge_rules.html`, built by `ui::change_requests::rules_build`): each pattern
//! with its settings, a form per pattern to change it, one to delete it and one to add a
//! pattern. Thin: everything goes through `ouro_code::branch_rules`.

use axum::extract::State;
use axum::http::Method;
use ouro_code::branch_rules;
use ouro_code::repos::{self, Repo};
use ouro_core::{OuroError, Permission, Role};

use crate::AppState;
use crate::extract::{Ctx, Path};
use crate::registry::Registry;
use crate::ui::change_requests::{parse_rules, rules_build, status_code};
use crate::ui::common::{fail, redirect_with_flash};
use crate::ui::{Form, UiError, UiResult, render_status};

pub fn register(reg: &mut Registry) {
    reg.route(
        Method::POST,
        "/projects/{slug}/code/{repo}/settings/merge/branches",
        Permission::Project(Role::Maintainer),
        save,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/code/{repo}/settings/merge/branches/delete",
        Permission::Project(Role::Maintainer),
        delete,
    );
}

/// One pattern's rule set as the page shows it.
pub struct BranchRow {
    pub index: usize,
    pub pattern: String,
    pub method: String,
    pub approvals: u32,
    pub checks: String,
    pub dismiss: bool,
}

pub(crate) async fn rows(st: &AppState, ctx: &Ctx, repo: &Repo) -> Result<Vec<BranchRow>, UiError> {
    let list = branch_rules::list(
        &mut st.store.read().await.map_err(|e| fail(ctx, e))?,
        repo.id,
    )
    .await
    .map_err(|e| fail(ctx, e))?;
    Ok(list
        .into_iter()
        .enumerate()
        .map(|(index, b)| BranchRow {
            index,
            pattern: b.pattern,
            method: b.rules.merge_method.as_str().to_string(),
            approvals: b.rules.required_approvals,
            checks: b.rules.required_checks.join(", "),
            dismiss: b.rules.dismiss_stale_approvals,
        })
        .collect())
}

fn page_url(slug: &str, repo: &str) -> String {
    format!("/projects/{slug}/code/{repo}/settings/merge")
}

async fn answer(
    st: &AppState,
    ctx: &Ctx,
    name: &str,
    result: Result<String, OuroError>,
) -> UiResult {
    let project = ctx.project()?;
    match result {
        Ok(msg) => Ok(redirect_with_flash(&page_url(&project.slug, name), &msg)),
        Err(e) => {
            let status = status_code(&e);
            if status.is_server_error() {
                return Err(fail(ctx, e));
            }
            let mut p = rules_build(st, ctx, project, name).await?;
            p.error = Some(e.message);
            Ok(render_status(status, &p))
        }
    }
}

async fn save(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name)): Path<(String, String)>,
    form: Form,
) -> UiResult {
    let project = ctx.project()?;
    let repo = repos::get(
        &mut st.store.read().await.map_err(|e| fail(&ctx, e))?,
        project.id,
        &name,
    )
    .await
    .map_err(|e| fail(&ctx, e))?;
    let pattern = form.get("pattern");
    let result = match parse_rules(&form) {
        Ok(rules) => branch_rules::set(
            &st.store,
            &repo,
            &project.slug,
            &ctx.actor(),
            &pattern,
            &rules,
        )
        .await
        .map(|b| format!("The merge rules for {} were saved.", b.pattern))
        .map_err(OuroError::from),
        Err(e) => Err(e),
    };
    answer(&st, &ctx, &name, result).await
}

async fn delete(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name)): Path<(String, String)>,
    form: Form,
) -> UiResult {
    let project = ctx.project()?;
    let repo = repos::get(
        &mut st.store.read().await.map_err(|e| fail(&ctx, e))?,
        project.id,
        &name,
    )
    .await
    .map_err(|e| fail(&ctx, e))?;
    let pattern = form.get("pattern");
    let result = branch_rules::delete(&st.store, &repo, &project.slug, &ctx.actor(), &pattern)
        .await
        .map(|()| {
            format!("The merge rules for {pattern} were deleted; its branches use the next matching pattern or the repository default.")
        })
        .map_err(OuroError::from);
    answer(&st, &ctx, &name, result).await
}
