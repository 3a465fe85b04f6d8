//! The first request of every push, `GET info/refs?service=git-receive-pack`, answered in
//! process instead of by `git http-backend` (which starts `git receive-pack --advertise-refs`:
//! two processes for a list of refs).
//!
//! The answer must be exactly what http-backend would send for this git version. The parts that
//! depend on the version (the header lines, the capability list with its `agent=git/x.y.z`) are
//! learned once per process from http-backend itself, by asking it for an empty repository
//! ([`Template`]); the refs are read with gix in git's order and with git's rules (symbolic refs
//! resolved, dangling symbolic refs left out, `capabilities^{}` for an empty repository).
//! Whatever would make git's answer differ from that (hidden refs, push options, other
//! advertisement settings, includes, alternates, a shallow repository, another object format)
//! makes [`receive_pack`] return `None`, and the caller runs http-backend as before.
//!
//! A test compares both answers byte for byte.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::OnceCell;

use crate::git::{self, GitError};

/// The longest pkt-line git writes (LARGE_PACKET_MAX).
const MAX_PKT: usize = 65520;
const ZERO: &str = "0000000000000000000000000000000000000000";

/// Config keys (lower case) of the repository that change what receive-pack advertises or
/// whether http-backend serves a push at all. Any of them set: git answers.
const CHANGES_ADVERTISEMENT: &[(&str, &str)] = &[
    ("receive", "hiderefs"),
    ("transfer", "hiderefs"),
    ("receive", "advertiseatomic"),
    ("receive", "advertisepushoptions"),
    ("transfer", "advertisesid"),
    ("receive", "certnonceseed"),
    ("receive", "shallowupdate"),
];

/// What http-backend sends for `info/refs?service=git-receive-pack`, minus the refs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The CGI header lines, in order (`Expires`, `Pragma`, `Cache-Control`, `Content-Type`).
    pub headers: Vec<(String, String)>,
    /// `# service=git-receive-pack` and its flush, as http-backend writes them.
    pub service: Vec<u8>,
    /// The capability list after the first ref's NUL.
    pub capabilities: String,
}

/// An answer built in process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertisement {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

static TEMPLATE: OnceCell<Option<Template>> = OnceCell::const_new();

/// The template, learned at the first call (`scratch`: a directory where a throwaway empty
/// repository may be made). `None` when http-backend's answer could not be understood; pushes
/// then keep using http-backend.
pub async fn template(scratch: &Path) -> Option<&'static Template> {
    TEMPLATE
        .get_or_init(|| async {
            match probe(scratch).await {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot learn git's push advertisement; http-backend answers it");
                    None
                }
            }
        })
        .await
        .as_ref()
}

fn probe_failed(message: impl Into<String>) -> GitError {
    GitError {
        what: "http-backend".into(),
        message: message.into(),
    }
}

/// Runs http-backend for `info/refs?service=git-receive-pack` on the bare repository `dir`
/// (its parent as the project root) and returns its whole output: the CGI headers and the body.
pub async fn http_backend_info_refs(dir: &Path) -> Result<Vec<u8>, GitError> {
    let root = dir
        .parent()
        .ok_or_else(|| probe_failed("no parent directory"))?;
    let name = dir
        .file_name()
        .ok_or_else(|| probe_failed("no directory name"))?
        .to_string_lossy()
        .into_owned();
    let out = git::http_backend()
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", format!("/{name}/info/refs"))
        .env("REQUEST_METHOD", "GET")
        .env("QUERY_STRING", "service=git-receive-pack")
        .env("REMOTE_USER", "ouro")
        .env("REMOTE_ADDR", "127.0.0.1")
        .output()
        .await
        .map_err(|e| probe_failed(format!("cannot run: {e}")))?;
    if !out.status.success() {
        return Err(probe_failed(String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(out.stdout)
}

/// Header lines as (name, value).
pub type Headers = Vec<(String, String)>;

/// Splits a CGI answer into its header lines and body.
pub fn split_cgi(out: &[u8]) -> Option<(Headers, &[u8])> {
    let end = out.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&out[..end]).ok()?;
    let mut headers = Vec::new();
    for line in head.split("\r\n") {
        let (k, v) = line.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    Some((headers, &out[end + 4..]))
}

async fn probe(scratch: &Path) -> Result<Template, GitError> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    std::fs::create_dir_all(scratch).map_err(|e| probe_failed(e.to_string()))?;
    let base = std::path::absolute(scratch)
        .map_err(|e| probe_failed(e.to_string()))?
        .join(format!(
            "advertise-probe-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
    let dir = base.join("empty.git");
    let result = async {
        git::init_bare(&dir, "main").await?;
        let out = http_backend_info_refs(&dir).await?;
        parse_template(&out).ok_or_else(|| {
            probe_failed(format!(
                "an unexpected answer: {:?}",
                String::from_utf8_lossy(&out)
            ))
        })
    }
    .await;
    let _ = std::fs::remove_dir_all(&base);
    result
}

/// Reads http-backend's answer for an empty repository: headers, the service lines, and the
/// capabilities of the `capabilities^{}` line.
pub fn parse_template(out: &[u8]) -> Option<Template> {
    let (headers, body) = split_cgi(out)?;
    let service = b"001f# service=git-receive-pack\n0000";
    let rest = body.strip_prefix(&service[..])?;
    let len = usize::from_str_radix(std::str::from_utf8(rest.get(..4)?).ok()?, 16).ok()?;
    let line = rest.get(4..len)?;
    if rest.get(len..)? != b"0000" {
        return None;
    }
    let line = line.strip_suffix(b"\n")?;
    let nul = line.iter().position(|b| *b == 0)?;
    if &line[..nul] != format!("{ZERO} capabilities^{{}}").as_bytes() {
        return None;
    }
    let capabilities = std::str::from_utf8(&line[nul + 1..]).ok()?.to_string();
    // The refs are read as SHA-1 ids below.
    if !capabilities.split(' ').any(|c| c == "object-format=sha1") {
        return None;
    }
    Some(Template {
        headers,
        service: service.to_vec(),
        capabilities,
    })
}

/// The advertisement for a push into the bare repository `dir`, or `None` when git must answer
/// (see the module documentation).
pub async fn receive_pack(dir: &Path, scratch: &Path) -> Result<Option<Advertisement>, GitError> {
    let Some(t) = template(scratch).await else {
        return Ok(None);
    };
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || build(&dir, t))
        .await
        .map_err(|e| probe_failed(e.to_string()))?
}

/// Whether the repository's own config leaves git's push behaviour as Ouro set it up: nothing
/// that hides refs or changes the advertisement, no includes, SHA-1 objects, pushes over HTTP
/// allowed, no alternates and not shallow. Only the repository's config counts: Ouro runs git
/// without system and global config.
pub fn plain_for_push(dir: &Path) -> bool {
    if dir.join("shallow").exists() || dir.join("objects/info/alternates").exists() {
        return false;
    }
    let Ok(file) =
        gix::config::File::from_path_no_includes(dir.join("config"), gix::config::Source::Local)
    else {
        return false;
    };
    for section in file.sections() {
        let name = section.header().name().to_string().to_ascii_lowercase();
        if name == "include" || name == "includeif" || name == "extensions" {
            return false;
        }
        for key in section.value_names() {
            let key = key.to_ascii_lowercase();
            if CHANGES_ADVERTISEMENT.contains(&(name.as_str(), key.as_str())) {
                return false;
            }
            if name == "http"
                && key == "receivepack"
                && section
                    .value("receivepack")
                    .is_none_or(|v| !v.eq_ignore_ascii_case(b"true"))
            {
                return false;
            }
            if name == "core"
                && key == "repositoryformatversion"
                && section
                    .value("repositoryformatversion")
                    .is_none_or(|v| v.as_slice() != b"0")
            {
                return false;
            }
        }
    }
    true
}

fn pkt(out: &mut Vec<u8>, payload: &[u8]) -> bool {
    if payload.len() + 4 > MAX_PKT {
        return false;
    }
    out.extend_from_slice(format!("{:04x}", payload.len() + 4).as_bytes());
    out.extend_from_slice(payload);
    true
}

/// The refs git's receive-pack advertises: every ref under `refs/` in byte order, symbolic refs
/// as the object their target names, dangling symbolic refs left out. `None` when a ref
/// cannot be read the way git would (git answers then).
pub fn advertised_refs(repo: &gix::Repository) -> Option<BTreeMap<Vec<u8>, gix::ObjectId>> {
    let platform = repo.references().ok()?;
    let mut out = BTreeMap::new();
    for r in platform.all().ok()? {
        let r = r.ok()?;
        let name = r.name().as_bstr().to_vec();
        // git follows at most 5 symbolic refs (SYMREF_MAXDEPTH); deeper is broken.
        let mut current = r;
        let mut id = None;
        for _ in 0..=5 {
            match current.target() {
                gix::refs::TargetRef::Object(oid) => {
                    id = Some(oid.to_owned());
                    break;
                }
                gix::refs::TargetRef::Symbolic(_) => match current.follow() {
                    Some(Ok(next)) => current = next,
                    // A dangling symbolic ref is broken: git leaves it out.
                    Some(Err(_)) | None => break,
                },
            }
        }
        // A ref to a missing object is advertised as it is (receive-pack includes broken refs).
        if let Some(id) = id {
            out.insert(name, id);
        }
    }
    Some(out)
}

fn build(dir: &Path, t: &Template) -> Result<Option<Advertisement>, GitError> {
    if !plain_for_push(dir) {
        return Ok(None);
    }
    let Ok(repo) = gix::open(dir) else {
        return Ok(None);
    };
    if repo.object_hash() != gix::hash::Kind::Sha1 {
        return Ok(None);
    }
    let Some(refs) = advertised_refs(&repo) else {
        return Ok(None);
    };
    let mut body = t.service.clone();
    let mut first = true;
    for (name, id) in &refs {
        let mut line = Vec::with_capacity(name.len() + 64);
        line.extend_from_slice(id.to_hex().to_string().as_bytes());
        line.push(b' ');
        line.extend_from_slice(name);
        if first {
            line.push(0);
            line.extend_from_slice(t.capabilities.as_bytes());
            first = false;
        }
        line.push(b'\n');
        if !pkt(&mut body, &line) {
            return Ok(None);
        }
    }
    if first {
        let line = format!("{ZERO} capabilities^{{}}\0{}\n", t.capabilities);
        pkt(&mut body, line.as_bytes());
    }
    body.extend_from_slice(b"0000");
    Ok(Some(Advertisement {
        headers: t.headers.clone(),
        body,
    }))
}

/// Where [`receive_pack`] may make its throwaway repository: the data dir's run directory.
pub fn scratch_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("run").join("git")
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn g(dir: &Path, args: &[&str]) -> String {
        let d = dir.to_string_lossy().into_owned();
        let mut all = vec![
            "-C",
            d.as_str(),
            "-c",
            "user.name=A",
            "-c",
            "user.email=a@e",
        ];
        all.extend_from_slice(args);
        git::run(&all).await.unwrap().trim().to_string()
    }

    /// http-backend's answer as CGI text, and ours rendered the same way.
    async fn both(dir: &Path, scratch: &Path) -> (Vec<u8>, Option<Vec<u8>>) {
        let theirs = http_backend_info_refs(dir).await.unwrap();
        let ours = receive_pack(dir, scratch).await.unwrap().map(|a| {
            let mut out = Vec::new();
            for (k, v) in &a.headers {
                out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&a.body);
            out
        });
        (theirs, ours)
    }

    #[tokio::test]
    async fn the_advertisement_matches_http_backend_byte_for_byte() {
        let tmp = tempfile::tempdir().unwrap();
        let scratch = tmp.path().join("scratch");
        let d = tmp.path().join("r.git");
        git::init_bare(&d, "main").await.unwrap();

        // Empty: the capabilities^{} line.
        let (theirs, ours) = both(&d, &scratch).await;
        assert_eq!(
            String::from_utf8_lossy(ours.as_deref().unwrap()),
            String::from_utf8_lossy(&theirs)
        );
        assert!(theirs.windows(15).any(|w| w == b"capabilities^{}"));

        // Branches (loose and packed), tags (light and annotated), a symbolic ref, a dangling
        // symbolic ref, a ref to a missing object, names that sort differently by byte.
        let tree = g(&d, &["mktree"]).await;
        let c1 = g(&d, &["commit-tree", "-m", "one", &tree]).await;
        let c2 = g(&d, &["commit-tree", "-m", "two", "-p", &c1, &tree]).await;
        for (name, id) in [
            ("refs/heads/main", &c2),
            ("refs/heads/a/b", &c1),
            ("refs/heads/a-b", &c1),
            ("refs/heads/Z", &c2),
            ("refs/tags/v1", &c1),
            ("refs/notes/commits", &c1),
        ] {
            g(&d, &["update-ref", name, id]).await;
        }
        g(&d, &["tag", "-a", "-m", "note", "v2", &c2]).await;
        g(&d, &["pack-refs", "--all"]).await;
        g(&d, &["update-ref", "refs/heads/loose", &c1]).await;
        g(&d, &["update-ref", "refs/heads/main", &c1]).await;
        g(&d, &["symbolic-ref", "refs/heads/alias", "refs/heads/main"]).await;
        g(
            &d,
            &["symbolic-ref", "refs/heads/dangling", "refs/heads/nope"],
        )
        .await;
        std::fs::write(
            d.join("refs/heads/missing"),
            "1234567890123456789012345678901234567890\n",
        )
        .unwrap();
        let (theirs, ours) = both(&d, &scratch).await;
        assert_eq!(
            String::from_utf8_lossy(ours.as_deref().unwrap()),
            String::from_utf8_lossy(&theirs)
        );
        let text = String::from_utf8_lossy(&theirs);
        assert!(text.contains("refs/heads/alias"), "{text}");
        assert!(text.contains("refs/heads/missing"), "{text}");
        assert!(!text.contains("refs/heads/dangling"), "{text}");

        // Settings that change git's answer hand it back to git.
        g(&d, &["config", "receive.advertisePushOptions", "true"]).await;
        assert!(receive_pack(&d, &scratch).await.unwrap().is_none());
        g(&d, &["config", "--unset", "receive.advertisePushOptions"]).await;
        g(&d, &["config", "transfer.hideRefs", "refs/notes"]).await;
        assert!(receive_pack(&d, &scratch).await.unwrap().is_none());
        g(&d, &["config", "--unset", "transfer.hideRefs"]).await;
        g(&d, &["config", "http.receivepack", "false"]).await;
        assert!(receive_pack(&d, &scratch).await.unwrap().is_none());
        g(&d, &["config", "http.receivepack", "true"]).await;
        assert!(receive_pack(&d, &scratch).await.unwrap().is_some());
        std::fs::write(d.join("objects/info/alternates"), "/nonexistent\n").unwrap();
        assert!(receive_pack(&d, &scratch).await.unwrap().is_none());
    }

    #[test]
    fn templates_parse_only_what_http_backend_sends() {
        let good = b"Expires: x\r\nContent-Type: application/x-git-receive-pack-advertisement\r\n\r\n001f# service=git-receive-pack\n0000\
0061 0000000000000000000000000000000000000000 capabilities^{}\0report-status object-format=sha1\n0000";
        // The length above is deliberately wrong (a space): refused.
        assert!(parse_template(good).is_none());
        let line = format!("{ZERO} capabilities^{{}}\0report-status object-format=sha1\n");
        let mut ok = b"Expires: x\r\n\r\n001f# service=git-receive-pack\n0000".to_vec();
        ok.extend_from_slice(format!("{:04x}", line.len() + 4).as_bytes());
        ok.extend_from_slice(line.as_bytes());
        ok.extend_from_slice(b"0000");
        let t = parse_template(&ok).unwrap();
        assert_eq!(t.capabilities, "report-status object-format=sha1");
        assert_eq!(t.headers, vec![("Expires".to_string(), "x".to_string())]);
        let sha256 = String::from_utf8_lossy(&ok).replace("sha1", "sha256");
        assert!(parse_template(sha256.as_bytes()).is_none());
    }
}
