//! Names users type: project slugs and user names. Both are validated the same way everywhere.

use crate::error::{ErrorCode, OuroError};

/// Rules shared by slugs and user names: 1..=40 chars of `a-z 0-9 -`, starting with a letter or
/// digit, not ending with `-`. Lower case only so that URLs and git remotes never differ by case.
fn check_name(kind: &str, code: ErrorCode, s: &str) -> Result<(), OuroError> {
    let ok_chars = s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ok = !s.is_empty() && s.len() <= 40 && ok_chars && !s.starts_with('-') && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(OuroError::new(
            code,
            format!(
                "invalid {kind} {s:?}: use 1 to 40 characters of a-z, 0-9 and '-', not starting or ending with '-'"
            ),
        ))
    }
}

/// Validates a project slug (`demo`, `payments-api`).
pub fn validate_slug(s: &str) -> Result<(), OuroError> {
    check_name("project slug", ErrorCode::InvalidSlug, s)
}

/// Validates a user name (`alice`, `ci-bot`).
pub fn validate_user_name(s: &str) -> Result<(), OuroError> {
    check_name("user name", ErrorCode::InvalidUserName, s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        for ok in ["demo", "a", "payments-api", "x1", "1x"] {
            assert!(validate_slug(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "Demo", "a b", "a/b", "é", &"a".repeat(41)] {
            assert!(validate_slug(bad).is_err(), "{bad}");
        }
    }
}
