//! Names and label values the manifests use. Kubernetes object names here are DNS-1123 labels
//! (≤ 63 characters of `a-z`, `0-9`, `-`, starting and ending alphanumeric) and label values
//! are at most 63 characters; a version such as `1.2.0-rc.1+build.5` fits neither, so it is
//! slugged (`1-2-0-rc-1-build-5`). The exact version is kept in the `ouro.dev/version`
//! annotation.

use sha2::{Digest, Sha256};

/// Label: the service's name.
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
/// Label: who manages the objects (`ouro`).
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Label: the version's slug.
pub const LABEL_VERSION: &str = "ouro.dev/version";
/// Label: the environment's slug.
pub const LABEL_ENVIRONMENT: &str = "ouro.dev/environment";
/// Label: the project's slug.
pub const LABEL_PROJECT: &str = "ouro.dev/project";
/// Annotation: the exact version (slugs lose `.` and `+`).
pub const ANNOTATION_VERSION: &str = "ouro.dev/version";

/// The longest DNS-1123 label (and label value).
pub const MAX_LABEL: usize = 63;

/// `text` as a DNS-1123 label: lowercase, every run of other characters one `-`, no `-` at
/// either end, at most 63 characters. Text that had to be cut keeps a short hash of the whole,
/// so two long versions sharing a prefix still get different slugs.
pub fn slug(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    if out.is_empty() {
        out.push('x');
    }
    fit(out, text, MAX_LABEL)
}

/// `<service>-<version slug>`, the name of the version's Deployment (and with `-env` of its
/// Secret), cut to a DNS-1123 label.
pub fn deployment_name(service: &str, version: &str) -> String {
    let joined = format!("{}-{}", slug(service), slug(version));
    fit(joined, &format!("{service}\n{version}"), MAX_LABEL)
}

/// The Secret holding the environment's variables and secrets for one version.
pub fn env_secret_name(service: &str, version: &str) -> String {
    // Secret names may be 253 characters; the suffix keeps it beside its Deployment's name.
    format!("{}-env", deployment_name(service, version))
}

/// Cuts `name` to `max` characters, replacing the tail by 8 hex digits of `whole`'s SHA-256.
fn fit(name: String, whole: &str, max: usize) -> String {
    if name.len() <= max {
        return name;
    }
    let hash = hex::encode(Sha256::digest(whole.as_bytes()));
    let mut head: String = name.chars().take(max - 9).collect();
    while head.ends_with('-') {
        head.pop();
    }
    format!("{head}-{}", &hash[..8])
}

/// Whether `s` is a DNS-1123 label (the rule for Service, Deployment and container names).
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_LABEL
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Whether `s` is a valid label value: empty, or ≤ 63 characters of alphanumerics, `-`, `_`,
/// `.`, starting and ending alphanumeric.
pub fn is_label_value(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() {
        return true;
    }
    b.len() <= MAX_LABEL
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_become_labels() {
        assert_eq!(slug("1.2.0-rc.1"), "1-2-0-rc-1");
        assert_eq!(slug("1.2.0+Build.5"), "1-2-0-build-5");
        assert_eq!(slug("--v1--"), "v1");
        assert_eq!(slug("..."), "x");
        assert_eq!(deployment_name("web", "1.2.0-rc.1"), "web-1-2-0-rc-1");
    }

    #[test]
    fn long_names_are_cut_with_a_hash_and_stay_distinct() {
        let a = deployment_name(
            "a-rather-long-service-name",
            "1.0.0-alpha.very.long.prerelease.one",
        );
        let b = deployment_name(
            "a-rather-long-service-name",
            "1.0.0-alpha.very.long.prerelease.two",
        );
        assert!(is_dns1123_label(&a), "{a}");
        assert!(is_dns1123_label(&b), "{b}");
        assert_ne!(a, b);
        assert_eq!(a.len(), MAX_LABEL);
    }

    #[test]
    fn label_rules() {
        assert!(is_dns1123_label("web-1-2-0"));
        assert!(!is_dns1123_label("-web"));
        assert!(!is_dns1123_label("Web"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(is_label_value("1.2.0-rc.1"));
        assert!(!is_label_value("1.2.0+b"));
        assert!(!is_label_value("-a"));
    }
}
