//! Unpacking a release bundle into a version's directory: verify the signed manifest and every
//! file first, then extract into a temporary directory beside the destination and rename it into
//! place; a marker written after the rename says the directory is complete, so a half-extracted
//! one is never used.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ouro_release::bundle::{self, Manifest};
use ouro_release::signing::VerifyingKey;
use sha2::{Digest, Sha256};

use crate::target::TargetError;

/// The directory of the unpacked files inside a version's directory.
pub const FILES: &str = "files";
/// Written once `files` is complete: the manifest's sha256.
pub const MARKER: &str = "unpacked";
const TMP_PREFIX: &str = ".files.tmp-";

/// What [`unpack`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    pub files_dir: PathBuf,
    pub manifest: Manifest,
    /// False when the version was already unpacked from the same bundle.
    pub extracted: bool,
}

fn start_err(bundle: &Path, e: impl std::fmt::Display) -> TargetError {
    TargetError::Start(format!("bundle {}: {e}", bundle.display()))
}

fn manifest_digest(m: &Manifest) -> String {
    hex::encode(Sha256::digest(m.to_bytes()))
}

/// Verifies `bundle` (signed by `key` when given, else by the key it carries) and makes sure its
/// files are unpacked into `version_dir/files`. Idempotent; refuses a bundle whose manifest
/// differs from the one the directory was unpacked from. Blocking: call it off the runtime.
pub fn unpack(
    bundle_path: &Path,
    version_dir: &Path,
    key: Option<&VerifyingKey>,
) -> Result<Unpacked, TargetError> {
    let open = || File::open(bundle_path).map_err(|e| start_err(bundle_path, e));
    let manifest = bundle::verify(io::BufReader::new(open()?), key)
        .map_err(|e| start_err(bundle_path, format!("verification failed: {e}")))?;
    let digest = manifest_digest(&manifest);
    let files_dir = version_dir.join(FILES);
    let marker = version_dir.join(MARKER);
    match fs::read_to_string(&marker) {
        Ok(done) if done.trim() == digest && files_dir.is_dir() => {
            return Ok(Unpacked {
                files_dir,
                manifest,
                extracted: false,
            });
        }
        Ok(done) if files_dir.is_dir() && !done.trim().is_empty() => {
            return Err(start_err(
                bundle_path,
                format!(
                    "{} was unpacked from another bundle of {} {} (manifest {}, this one {digest})",
                    version_dir.display(),
                    manifest.project,
                    manifest.version,
                    done.trim()
                ),
            ));
        }
        _ => {}
    }
    fs::create_dir_all(version_dir).map_err(|e| start_err(bundle_path, e))?;
    remove_stale_temps(version_dir);
    let tmp = version_dir.join(format!("{TMP_PREFIX}{:016x}", rand::random::<u64>()));
    fs::create_dir(&tmp).map_err(|e| start_err(bundle_path, e))?;
    let res = extract(open()?, &manifest, &tmp).map_err(|e| start_err(bundle_path, e));
    if let Err(e) = res {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    // A `files` without the marker is a leftover of an interrupted unpack: replace it.
    if files_dir.exists() {
        fs::remove_dir_all(&files_dir).map_err(|e| start_err(bundle_path, e))?;
    }
    fs::rename(&tmp, &files_dir).map_err(|e| start_err(bundle_path, e))?;
    write_atomic(&marker, format!("{digest}\n").as_bytes())
        .map_err(|e| start_err(bundle_path, e))?;
    Ok(Unpacked {
        files_dir,
        manifest,
        extracted: true,
    })
}

/// The files directory of a version that was completely unpacked before, if any.
pub fn unpacked_files(version_dir: &Path) -> Option<PathBuf> {
    let files = version_dir.join(FILES);
    let done = fs::read_to_string(version_dir.join(MARKER)).ok()?;
    (!done.trim().is_empty() && files.is_dir()).then_some(files)
}

fn remove_stale_temps(version_dir: &Path) {
    if let Ok(rd) = fs::read_dir(version_dir) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Writes a file by writing a temporary one and renaming it over.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{:08x}", rand::random::<u32>()));
    let tmp = PathBuf::from(tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

/// Whether a file's first bytes say it is meant to be executed (a script or an ELF binary):
/// bundles store every file as 0644, and a release's own binary must still run.
fn looks_executable(head: &[u8]) -> bool {
    head.starts_with(b"#!") || head.starts_with(b"\x7fELF")
}

/// Extracts the `files/` entries of an already verified bundle into `dest`, checking each path
/// and digest again (the bundle file could change between the two reads).
fn extract(reader: File, manifest: &Manifest, dest: &Path) -> Result<(), String> {
    let want: BTreeMap<&str, (&str, u64)> = manifest
        .files
        .iter()
        .map(|f| (f.path.as_str(), (f.sha256.as_str(), f.size)))
        .collect();
    let dec = zstd::stream::read::Decoder::new(io::BufReader::new(reader))
        .map_err(|e| format!("reading: {e}"))?;
    let mut archive = tar::Archive::new(dec);
    let mut done = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    for entry in archive.entries().map_err(|e| format!("reading: {e}"))? {
        let mut entry = entry.map_err(|e| format!("reading: {e}"))?;
        let name = String::from_utf8(entry.path_bytes().into_owned())
            .map_err(|_| "an entry's path is not UTF-8".to_string())?;
        bundle::check_path(&name).map_err(|r| format!("{name}: refused: {r}"))?;
        let Some(rel) = name.strip_prefix(bundle::FILES_DIR) else {
            continue;
        };
        bundle::check_path(rel).map_err(|r| format!("{name}: refused: {r}"))?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(format!("{name}: refused: not a regular file"));
        }
        let Some((sha, size)) = want.get(rel) else {
            return Err(format!("{name}: not listed in the manifest"));
        };
        let target = dest.join(rel);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(|e| format!("{name}: {e}"))?;
        }
        // create_new: never follow or replace something already there.
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&target)
            .map_err(|e| format!("{name}: {e}"))?;
        let mut h = Sha256::new();
        let mut n = 0u64;
        let mut head: Vec<u8> = Vec::new();
        loop {
            let k = match entry.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("{name}: {e}")),
            };
            if head.len() < 4 {
                head.extend_from_slice(&buf[..k.min(4)]);
            }
            h.update(&buf[..k]);
            out.write_all(&buf[..k])
                .map_err(|e| format!("{name}: {e}"))?;
            n += k as u64;
        }
        if n != *size || hex::encode(h.finalize()) != *sha {
            return Err(format!(
                "{name}: changed since it was verified (size or sha256 differs)"
            ));
        }
        if looks_executable(&head) {
            use std::os::unix::fs::PermissionsExt;
            out.set_permissions(fs::Permissions::from_mode(0o755))
                .map_err(|e| format!("{name}: {e}"))?;
        }
        done += 1;
    }
    if done != want.len() {
        return Err(format!(
            "{} of the manifest's {} files were found",
            done,
            want.len()
        ));
    }
    Ok(())
}
