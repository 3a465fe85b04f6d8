//! Project roles and the permissions routes declare.

use serde::{Deserialize, Serialize};

/// A member's role in a project. Ordered: each role can do everything the smaller ones can.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Developer,
    Maintainer,
    Owner,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Developer, Role::Maintainer, Role::Owner];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Developer => "developer",
            Role::Maintainer => "maintainer",
            Role::Owner => "owner",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// What a route requires of its caller. Every route declares one; the server enforces it before
/// the handler runs, so a handler cannot forget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Anyone, signed in or not (health checks, sign-in page, the OpenAPI document).
    Public,
    /// Any signed-in user.
    Authenticated,
    /// An instance administrator.
    Admin,
    /// At least this role in the project named by the `{slug}` path parameter. Public projects
    /// grant `Viewer` to everyone, signed in or not.
    Project(Role),
}

impl Permission {
    pub fn describe(self) -> String {
        match self {
            Permission::Public => "public".into(),
            Permission::Authenticated => "authenticated".into(),
            Permission::Admin => "admin".into(),
            Permission::Project(r) => format!("project:{}", r.as_str()),
        }
    }
}
