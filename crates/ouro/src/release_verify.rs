//! `ouro release verify BUNDLE [--key HEX|FILE]`: checks a release bundle offline (no server, no
//! database): manifest.json's Ed25519 signature, then every file's size and sha256, no file
//! missing or extra, no unsafe entry.
//!
//! Exit status: 0 and `ok` on standard output when the bundle is intact; 1 when it is not, with
//! one line on standard output naming the file that does not match (e.g.
//! `files/app.bin: sha256 mismatch (manifest …, actual …)`); 2 when the bundle cannot be read or
//! `--key` is not a key.

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::PathBuf;

use clap::Args;
use ouro_release::bundle;
use ouro_release::signing::{self, VerifyingKey};

#[derive(Args)]
pub struct VerifyArgs {
    /// The bundle (`{project}-{version}.tar.zst`).
    bundle: PathBuf,
    /// The expected signing key: 64 hex digits, or a file holding them (or the JSON of
    /// `GET /api/v1/release-signing-key`). A bundle signed with another key fails. Without it,
    /// the key inside the bundle (manifest.pub) is used.
    #[arg(long, value_name = "HEX|FILE")]
    key: Option<String>,
}

/// Reads `--key`: hex digits, or a file with hex digits or `{"public_key": "..."}`.
fn expected_key(arg: &str) -> Result<VerifyingKey, String> {
    let t = arg.trim();
    if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return signing::parse_public_key(t).map_err(|e| format!("--key: {e}"));
    }
    let text = std::fs::read_to_string(arg).map_err(|e| {
        format!("--key: {arg:?} is neither 64 hex digits nor a readable file ({e})")
    })?;
    let hex = if text.trim_start().starts_with('{') {
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("--key: {arg}: {e}"))?;
        v["public_key"]
            .as_str()
            .ok_or_else(|| format!("--key: {arg}: no \"public_key\" string"))?
            .to_string()
    } else {
        text
    };
    signing::parse_public_key(&hex).map_err(|e| format!("--key: {arg}: {e}"))
}

/// Runs the command and returns the exit status.
pub fn run(args: VerifyArgs) -> i32 {
    let key = match args.key.as_deref().map(expected_key).transpose() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let name = args.bundle.display().to_string();
    let file = match File::open(&args.bundle) {
        Ok(f) if f.metadata().is_ok_and(|m| m.is_file()) => f,
        Ok(_) => {
            eprintln!("error: cannot read {name}: not a file");
            return 2;
        }
        Err(e) => {
            eprintln!("error: cannot read {name}: {e}");
            return 2;
        }
    };
    let mut out = std::io::stdout().lock();
    match bundle::verify(BufReader::with_capacity(256 * 1024, file), key.as_ref()) {
        Ok(m) => {
            let _ = writeln!(out, "ok");
            eprintln!(
                "{name}: {} {} ({} at {}), {} file(s), signature valid",
                m.project,
                m.version,
                m.tag,
                m.sha,
                m.files.len()
            );
            0
        }
        Err(e) => {
            let _ = writeln!(out, "{e}");
            eprintln!("error: {name} does not verify: {e}");
            1
        }
    }
}
