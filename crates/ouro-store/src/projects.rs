//! Projects and their members.

use ouro_core::events as ev;
use ouro_core::{Actor, ErrorCode, NewEvent, OuroError, Role};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::accounts::User;
use crate::db::{Executor, Row, q};
use crate::{Page, PageReq, Store, StoreError, on_unique};

/// Who can see a project without being a member.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Members only (the default).
    Private,
    /// Every signed-in user can view.
    Internal,
    /// Everyone can view, signed in or not.
    Public,
}

impl Visibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Private => "private",
            Visibility::Internal => "internal",
            Visibility::Public => "public",
        }
    }
    pub fn parse(s: &str) -> Option<Visibility> {
        [
            Visibility::Private,
            Visibility::Internal,
            Visibility::Public,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, schemars::JsonSchema)]
pub struct Project {
    pub id: i64,
    pub slug: String,
    pub name: String,
    pub description: String,
    pub visibility: Visibility,
    #[serde(with = "ouro_core::time::serde_ms")]
    #[schemars(with = "String")]
    pub created_at: i64,
    #[serde(with = "ouro_core::time::serde_ms")]
    #[schemars(with = "String")]
    pub updated_at: i64,
    /// Send it back with an update; a stale version gets 409.
    pub version: i64,
}

fn project_from(r: &Row) -> Result<Project, StoreError> {
    Ok(Project {
        id: r.i64("id")?,
        slug: r.text("slug")?,
        name: r.text("name")?,
        description: r.text("description")?,
        visibility: Visibility::parse(&r.text("visibility")?).unwrap_or(Visibility::Private),
        created_at: r.i64("created_at")?,
        updated_at: r.i64("updated_at")?,
        version: r.i64("version")?,
    })
}

pub fn not_found(slug: &str) -> OuroError {
    OuroError::new(
        ErrorCode::ProjectNotFound,
        format!("project {slug:?} does not exist or you cannot see it"),
    )
}

fn validate_name(name: &str) -> Result<(), OuroError> {
    let n = name.trim().chars().count();
    if n == 0 || n > 100 {
        return Err(OuroError::field(
            "name",
            "the name must have 1 to 100 characters",
        ));
    }
    Ok(())
}

fn validate_description(d: &str) -> Result<(), OuroError> {
    if d.chars().count() > 10_000 {
        return Err(OuroError::field(
            "description",
            "the description must have at most 10000 characters",
        ));
    }
    Ok(())
}

/// Creates a project; the creator becomes its owner.
pub async fn create(
    store: &Store,
    creator: &User,
    slug: &str,
    name: &str,
    description: &str,
    visibility: Visibility,
) -> Result<Project, StoreError> {
    ouro_core::ids::validate_slug(slug)?;
    validate_name(name)?;
    validate_description(description)?;
    let now = ouro_core::time::now_ms();
    let mut tx = store.begin().await?;
    let row = on_unique(
        q(
            "INSERT INTO projects (slug, name, description, visibility, created_at, updated_at) \
           VALUES ($1, $2, $3, $4, $5, $5) RETURNING *",
        )
        .bind(slug)
        .bind(name.trim())
        .bind(description)
        .bind(visibility.as_str())
        .bind(now)
        .fetch_one(&mut tx)
        .await,
        || {
            OuroError::new(
                ErrorCode::SlugTaken,
                format!("a project with slug {slug:?} already exists"),
            )
        },
    )?;
    let p = project_from(&row)?;
    q("INSERT INTO members (project_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)")
        .bind(p.id)
        .bind(creator.id)
        .bind(Role::Owner.as_str())
        .bind(now)
        .execute(&mut tx)
        .await?;
    let actor = creator.actor();
    tx.append(
        NewEvent::new(
            ev::PROJECT_CREATED,
            &actor,
            p.id,
            json!({"slug": slug, "name": p.name, "visibility": visibility}),
        )
        .in_project(p.id, slug),
    )
    .await?;
    tx.append(
        NewEvent::new(
            ev::MEMBER_ADDED,
            &actor,
            creator.id,
            json!({"user": creator.name, "role": "owner"}),
        )
        .in_project(p.id, slug),
    )
    .await?;
    tx.commit().await?;
    Ok(p)
}

pub async fn by_slug(ex: &mut impl Executor, slug: &str) -> Result<Option<Project>, StoreError> {
    q("SELECT * FROM projects WHERE slug = $1")
        .bind(slug)
        .fetch_optional(ex)
        .await?
        .as_ref()
        .map(project_from)
        .transpose()
}

/// The project and the caller's effective role in it, or `None` when the caller cannot see it.
pub async fn access(
    ex: &mut impl Executor,
    slug: &str,
    user: Option<&User>,
) -> Result<Option<(Project, Role)>, StoreError> {
    let row = q("SELECT p.*, m.role AS member_role FROM projects p \
                 LEFT JOIN members m ON m.project_id = p.id AND m.user_id = $2 WHERE p.slug = $1")
    .bind(slug)
    .bind(user.map(|u| u.id).unwrap_or(-1))
    .fetch_optional(ex)
    .await?;
    let Some(r) = row else { return Ok(None) };
    let p = project_from(&r)?;
    let member = r.opt_text("member_role")?.and_then(|s| Role::parse(&s));
    let role = match (user, member) {
        (Some(u), _) if u.is_admin => Some(Role::Owner),
        (_, Some(role)) => Some(role),
        (Some(_), None) if p.visibility != Visibility::Private => Some(Role::Viewer),
        (None, None) if p.visibility == Visibility::Public => Some(Role::Viewer),
        _ => None,
    };
    Ok(role.map(|r| (p, r)))
}

/// Ids of the projects whose events `user` may read.
pub async fn visible_ids(
    ex: &mut impl Executor,
    user: Option<&User>,
) -> Result<Vec<i64>, StoreError> {
    let rows = match user {
        Some(u) => {
            q("SELECT id FROM projects WHERE visibility <> 'private' \
               OR id IN (SELECT project_id FROM members WHERE user_id = $1) ORDER BY id")
            .bind(u.id)
            .fetch_all(ex)
            .await?
        }
        None => {
            q("SELECT id FROM projects WHERE visibility = 'public' ORDER BY id")
                .fetch_all(ex)
                .await?
        }
    };
    rows.iter().map(|r| r.i64("id")).collect()
}

/// Projects `user` can see, by id.
pub async fn list_visible(
    ex: &mut impl Executor,
    user: Option<&User>,
    page: PageReq,
    search: Option<&str>,
) -> Result<Page<Project>, StoreError> {
    let pattern = search.map(|s| format!("%{}%", s.to_lowercase().replace(['%', '_'], "")));
    let (cond, uid) = match user {
        Some(u) if u.is_admin => ("1 = 1", u.id),
        Some(u) => (
            "(p.visibility <> 'private' OR p.id IN (SELECT project_id FROM members WHERE user_id = $3))",
            u.id,
        ),
        None => ("p.visibility = 'public' AND $3 = $3", -1),
    };
    let rows = q(format!(
        "SELECT p.* FROM projects p WHERE p.id > $1 AND {cond} \
         AND ($4 IS NULL OR LOWER(p.slug) LIKE $4 OR LOWER(p.name) LIKE $4) ORDER BY p.id LIMIT $2"
    ))
    .bind(page.after)
    .bind(page.limit + 1)
    .bind(uid)
    .bind(pattern)
    .fetch_all(ex)
    .await?;
    let items = rows
        .iter()
        .map(project_from)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(page.finish(items, |p| p.id))
}

/// A partial update. `None` fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct ProjectPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub visibility: Option<Visibility>,
}

/// Applies `patch` if the project is still at `expected_version` (when given); otherwise 409
/// with the current version in the details.
pub async fn update(
    store: &Store,
    actor: &Actor,
    slug: &str,
    expected_version: Option<i64>,
    patch: ProjectPatch,
) -> Result<Project, StoreError> {
    if let Some(n) = &patch.name {
        validate_name(n)?;
    }
    if let Some(d) = &patch.description {
        validate_description(d)?;
    }
    let mut tx = store.begin().await?;
    let cur = by_slug(&mut tx, slug)
        .await?
        .ok_or_else(|| not_found(slug))?;
    if let Some(v) = expected_version
        && v != cur.version
    {
        return Err(OuroError::stale_version("project", cur.version).into());
    }
    let mut changes = Map::new();
    let name = patch
        .name
        .map(|n| n.trim().to_string())
        .unwrap_or(cur.name.clone());
    let description = patch.description.unwrap_or(cur.description.clone());
    let visibility = patch.visibility.unwrap_or(cur.visibility);
    if name != cur.name {
        changes.insert("name".into(), json!({"old": cur.name, "new": name}));
    }
    if description != cur.description {
        changes.insert(
            "description".into(),
            json!({"old": cur.description, "new": description}),
        );
    }
    if visibility != cur.visibility {
        changes.insert(
            "visibility".into(),
            json!({"old": cur.visibility, "new": visibility}),
        );
    }
    if changes.is_empty() {
        return Ok(cur);
    }
    let row = q(
        "UPDATE projects SET name = $1, description = $2, visibility = $3, updated_at = $4, \
                 version = version + 1 WHERE id = $5 AND version = $6 RETURNING *",
    )
    .bind(&name)
    .bind(&description)
    .bind(visibility.as_str())
    .bind(ouro_core::time::now_ms())
    .bind(cur.id)
    .bind(cur.version)
    .fetch_optional(&mut tx)
    .await?
    .ok_or_else(|| OuroError::stale_version("project", cur.version + 1))?;
    let p = project_from(&row)?;
    tx.append(
        NewEvent::new(
            ev::PROJECT_UPDATED,
            actor,
            p.id,
            json!({"changes": Value::Object(changes)}),
        )
        .in_project(p.id, slug),
    )
    .await?;
    tx.commit().await?;
    Ok(p)
}

pub async fn delete(store: &Store, actor: &Actor, slug: &str) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    let p = by_slug(&mut tx, slug)
        .await?
        .ok_or_else(|| not_found(slug))?;
    q("DELETE FROM projects WHERE id = $1")
        .bind(p.id)
        .execute(&mut tx)
        .await?;
    tx.append(
        NewEvent::new(
            ev::PROJECT_DELETED,
            actor,
            p.id,
            json!({"slug": slug, "name": p.name}),
        )
        .in_project(p.id, slug),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

#[derive(Debug, Clone, Serialize, PartialEq, schemars::JsonSchema)]
pub struct Member {
    pub user: String,
    pub role: Role,
    #[serde(with = "ouro_core::time::serde_ms")]
    #[schemars(with = "String")]
    pub since: i64,
}

pub async fn members(ex: &mut impl Executor, project_id: i64) -> Result<Vec<Member>, StoreError> {
    q(
        "SELECT u.name, m.role, m.created_at FROM members m JOIN users u ON u.id = m.user_id \
       WHERE m.project_id = $1 ORDER BY u.name",
    )
    .bind(project_id)
    .fetch_all(ex)
    .await?
    .iter()
    .map(|r| {
        Ok(Member {
            user: r.text("name")?,
            role: Role::parse(&r.text("role")?).unwrap_or(Role::Viewer),
            since: r.i64("created_at")?,
        })
    })
    .collect()
}

/// Adds a member or changes the role of an existing one. Refuses to demote the last owner.
pub async fn set_member(
    store: &Store,
    actor: &Actor,
    project: &Project,
    user_name: &str,
    role: Role,
) -> Result<Member, StoreError> {
    let mut tx = store.begin().await?;
    let user = crate::accounts::user_by_name(&mut tx, user_name)
        .await?
        .ok_or_else(|| {
            OuroError::new(
                ErrorCode::UserNotFound,
                format!("no user named {user_name:?}"),
            )
        })?;
    let old = q("SELECT role FROM members WHERE project_id = $1 AND user_id = $2")
        .bind(project.id)
        .bind(user.id)
        .fetch_optional(&mut tx)
        .await?
        .map(|r| r.text("role"))
        .transpose()?
        .and_then(|s| Role::parse(&s));
    if old == Some(role) {
        return Ok(Member {
            user: user.name,
            role,
            since: ouro_core::time::now_ms(),
        });
    }
    if old == Some(Role::Owner) {
        ensure_other_owner(&mut tx, project.id, user.id).await?;
    }
    let now = ouro_core::time::now_ms();
    q(
        "INSERT INTO members (project_id, user_id, role, created_at) VALUES ($1, $2, $3, $4) \
       ON CONFLICT (project_id, user_id) DO UPDATE SET role = excluded.role",
    )
    .bind(project.id)
    .bind(user.id)
    .bind(role.as_str())
    .bind(now)
    .execute(&mut tx)
    .await?;
    let (kind, payload) = match old {
        None => (ev::MEMBER_ADDED, json!({"user": user.name, "role": role})),
        Some(o) => (
            ev::MEMBER_ROLE_CHANGED,
            json!({"user": user.name, "old": o, "new": role}),
        ),
    };
    tx.append(NewEvent::new(kind, actor, user.id, payload).in_project(project.id, &project.slug))
        .await?;
    tx.commit().await?;
    Ok(Member {
        user: user.name,
        role,
        since: now,
    })
}

async fn ensure_other_owner(
    tx: &mut crate::Tx,
    project_id: i64,
    user_id: i64,
) -> Result<(), StoreError> {
    let owners = q("SELECT COUNT(*) AS n FROM members WHERE project_id = $1 AND role = 'owner' AND user_id <> $2")
        .bind(project_id)
        .bind(user_id)
        .fetch_one(tx)
        .await?
        .i64("n")?;
    if owners == 0 {
        return Err(OuroError::new(
            ErrorCode::LastOwner,
            "a project needs at least one owner; make someone else owner first",
        )
        .into());
    }
    Ok(())
}

pub async fn remove_member(
    store: &Store,
    actor: &Actor,
    project: &Project,
    user_name: &str,
) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    let row = q(
        "SELECT m.user_id, m.role FROM members m JOIN users u ON u.id = m.user_id \
                 WHERE m.project_id = $1 AND u.name = $2",
    )
    .bind(project.id)
    .bind(user_name)
    .fetch_optional(&mut tx)
    .await?
    .ok_or_else(|| {
        OuroError::new(
            ErrorCode::MemberNotFound,
            format!("{user_name:?} is not a member of this project"),
        )
    })?;
    let uid = row.i64("user_id")?;
    if row.text("role")? == "owner" {
        ensure_other_owner(&mut tx, project.id, uid).await?;
    }
    q("DELETE FROM members WHERE project_id = $1 AND user_id = $2")
        .bind(project.id)
        .bind(uid)
        .execute(&mut tx)
        .await?;
    tx.append(
        NewEvent::new(ev::MEMBER_REMOVED, actor, uid, json!({"user": user_name}))
            .in_project(project.id, &project.slug),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
