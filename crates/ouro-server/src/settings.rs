//! Layered configuration: defaults, then `ouro.toml` (in the data dir, or `--config`), then
//! `OURO_*` environment variables, then command-line flags. Secrets can come from files
//! (`OURO_DATABASE_URL_FILE`, `OURO_SECRET_KEY_FILE`, or `*_file` keys in the TOML) so they stay
//! out of process listings and shell history. `Debug` never prints a secret.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Everything `ouro serve` needs.
#[derive(Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// `sqlite://...` or `postgres://...`; `None` means the SQLite file in the data dir.
    pub database_url: Option<String>,
    /// The instance secret that encrypts stored secrets (webhook keys). `None`: a key file in the
    /// data dir, created on first start.
    pub secret_key: Option<String>,
    /// The largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// The largest file accepted as a work item attachment, in bytes. Attachment uploads are
    /// exempt from `max_body_bytes`.
    pub attachment_max_bytes: usize,
    /// The URL users reach Ouro at, used in links Ouro prints; defaults to `http://LISTEN`.
    pub public_url: Option<String>,
    /// Failed sign-ins allowed per account, and per client address, in `throttle_window_secs`.
    pub throttle_per_account: u32,
    pub throttle_per_ip: u32,
    pub throttle_window_secs: u64,
    /// Attempts per webhook delivery before it is marked failed, and the first retry delay.
    pub webhook_max_attempts: u32,
    pub webhook_retry_base_ms: u64,
    pub webhook_timeout_secs: u64,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT.
    pub shutdown_grace_secs: u64,
    /// Seconds a repository import or a mirror fetch may take before git is stopped.
    pub git_fetch_timeout_secs: u64,
    /// The largest git push (pack bytes) and the largest file (blob) a push may add; a
    /// repository's push rules can set their own.
    pub push_max_bytes: u64,
    pub push_max_file_bytes: u64,
    /// Build artifacts, caches and their blob store (`[artifacts]`; docs/artifacts.md).
    pub artifacts: ouro_build::artifacts::StorageSettings,
    /// Where blobs are stored: the data dir, or an S3-compatible bucket (`[blobs]`,
    /// `OURO_BLOBS_*`; docs/artifacts.md).
    pub blobs: ouro_build::blobs_s3::BlobSettings,
    /// Slots of the in-process runner (`[runner] slots`; default: the number of cores; 0: no
    /// in-process runner) and its labels besides `local`.
    pub runner_slots: usize,
    pub runner_labels: Vec<String>,
    /// Run the in-process runner's steps in the bubblewrap sandbox (`[runner] sandbox`,
    /// `OURO_RUNNER_SANDBOX`); the server refuses to start when bubblewrap cannot run.
    pub runner_sandbox: bool,
    /// The most bytes of output stored per job attempt (`[build] log_cap_bytes`, env
    /// `OURO_BUILD_LOG_CAP_BYTES`; default 64 MiB); beyond it the log ends with a marker line.
    pub build_log_cap_bytes: u64,
    /// Seconds a job stays with a runner that stopped heartbeating before it is retried or fails
    /// with `runner_lost` (`[build] lease_seconds`, env `OURO_BUILD_LEASE_SECONDS`; 6 to 3600,
    /// default 30).
    pub build_lease_seconds: u64,
    /// Deploy (`[deploy]`; docs/deploy.md): where the built-in proxy listens for routes of
    /// `.ouro/services.yml` that name no `listen` (env `OURO_DEPLOY_LISTEN`; default
    /// 127.0.0.1:8080), and how long new replicas may take to become ready.
    pub deploy_listen: String,
    pub deploy_ready_timeout_secs: u64,
    /// Unpacked versions kept per service and environment (`[deploy] keep_versions`); the live,
    /// the previous and running versions are kept on top.
    pub deploy_keep_versions: usize,
    /// Where deployments run: `local` (supervised processes behind the built-in proxy, the
    /// default) or `kubernetes` (`[deploy] target`, env `OURO_DEPLOY_TARGET`), with the
    /// `[deploy.kubernetes]` table (docs/kubernetes.md).
    pub deploy_target: String,
    pub deploy_kubernetes: ouro_deploy_kube::KubeSettings,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("data_dir", &self.data_dir)
            .field("listen", &self.listen)
            .field(
                "database_url",
                &self.database_url.as_deref().map(ouro_store::redact_url),
            )
            .field("secret_key", &self.secret_key.as_ref().map(|_| "***"))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("attachment_max_bytes", &self.attachment_max_bytes)
            .field("public_url", &self.public_url)
            .field("throttle_per_account", &self.throttle_per_account)
            .field("throttle_per_ip", &self.throttle_per_ip)
            .field("throttle_window_secs", &self.throttle_window_secs)
            .field("webhook_max_attempts", &self.webhook_max_attempts)
            .field("webhook_retry_base_ms", &self.webhook_retry_base_ms)
            .field("webhook_timeout_secs", &self.webhook_timeout_secs)
            .field("shutdown_grace_secs", &self.shutdown_grace_secs)
            .field("git_fetch_timeout_secs", &self.git_fetch_timeout_secs)
            .field("push_max_bytes", &self.push_max_bytes)
            .field("push_max_file_bytes", &self.push_max_file_bytes)
            .field("artifacts", &self.artifacts)
            .field("blobs", &self.blobs)
            .field("runner_slots", &self.runner_slots)
            .field("runner_labels", &self.runner_labels)
            .field("runner_sandbox", &self.runner_sandbox)
            .field("build_log_cap_bytes", &self.build_log_cap_bytes)
            .field("build_lease_seconds", &self.build_lease_seconds)
            .field("deploy_listen", &self.deploy_listen)
            .field("deploy_ready_timeout_secs", &self.deploy_ready_timeout_secs)
            .field("deploy_keep_versions", &self.deploy_keep_versions)
            .field("deploy_target", &self.deploy_target)
            .field("deploy_kubernetes", &self.deploy_kubernetes)
            .finish()
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            data_dir: PathBuf::from("./ouro-data"),
            listen: "127.0.0.1:7070".parse().expect("valid default address"),
            database_url: None,
            secret_key: None,
            max_body_bytes: 1024 * 1024,
            attachment_max_bytes: 10 * 1024 * 1024,
            public_url: None,
            throttle_per_account: 5,
            throttle_per_ip: 20,
            throttle_window_secs: 900,
            webhook_max_attempts: 6,
            webhook_retry_base_ms: 2000,
            webhook_timeout_secs: 10,
            shutdown_grace_secs: 10,
            git_fetch_timeout_secs: 600,
            push_max_bytes: 2 * 1024 * 1024 * 1024,
            push_max_file_bytes: 100 * 1024 * 1024,
            artifacts: Default::default(),
            blobs: Default::default(),
            runner_slots: std::thread::available_parallelism().map_or(1, |n| n.get()),
            runner_labels: Vec::new(),
            runner_sandbox: false,
            build_log_cap_bytes: ouro_build::logs::LogConfig::default().cap_bytes,
            build_lease_seconds: (ouro_build::runner::LEASE_MS / 1000) as u64,
            deploy_listen: "127.0.0.1:8080".into(),
            deploy_ready_timeout_secs: 120,
            deploy_keep_versions: ouro_deploy::engine::KEEP_VERSIONS,
            deploy_target: "local".into(),
            deploy_kubernetes: Default::default(),
        }
    }
}

/// The `ouro.toml` file. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub database_url: Option<String>,
    pub database_url_file: Option<PathBuf>,
    pub secret_key_file: Option<PathBuf>,
    pub max_body_bytes: Option<usize>,
    pub attachment_max_bytes: Option<usize>,
    pub public_url: Option<String>,
    pub throttle_per_account: Option<u32>,
    pub throttle_per_ip: Option<u32>,
    pub throttle_window_secs: Option<u64>,
    pub webhook_max_attempts: Option<u32>,
    pub webhook_retry_base_ms: Option<u64>,
    pub webhook_timeout_secs: Option<u64>,
    pub shutdown_grace_secs: Option<u64>,
    pub git_fetch_timeout_secs: Option<u64>,
    pub push_max_bytes: Option<u64>,
    pub push_max_file_bytes: Option<u64>,
    pub artifacts: Option<ouro_build::artifacts::StorageSettings>,
    pub blobs: Option<ouro_build::blobs_s3::BlobSettings>,
    pub runner: Option<RunnerConfig>,
    pub build: Option<BuildConfig>,
    pub deploy: Option<DeployConfig>,
}

/// The `[deploy]` table: the local target and its proxy.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployConfig {
    /// `HOST:PORT` of the proxy for routes that name no `listen`.
    pub listen: Option<String>,
    /// Seconds new replicas may take to become ready.
    pub ready_timeout_secs: Option<u64>,
    /// Unpacked versions kept per service and environment (default 3).
    pub keep_versions: Option<usize>,
    /// `local` or `kubernetes`.
    pub target: Option<String>,
    pub kubernetes: Option<ouro_deploy_kube::KubeSettings>,
}

/// The `[build]` table: pipelines on the server.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildConfig {
    /// The most bytes of output stored per job attempt.
    pub log_cap_bytes: Option<u64>,
    /// The job lease in seconds.
    pub lease_seconds: Option<u64>,
}

/// The `[runner]` table: the in-process runner.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerConfig {
    pub slots: Option<usize>,
    pub labels: Option<Vec<String>>,
    pub sandbox: Option<bool>,
}

/// Values given on the command line; they win over everything else.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub database_url: Option<String>,
}

/// A configuration problem, with what to do about it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The commented default `ouro.toml` printed by `ouro config default`.
pub const DEFAULT_TOML: &str = include_str!("../../../docs/ouro.default.toml");

fn read_secret_file(path: &Path, what: &str) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
        .map_err(|e| ConfigError(format!("cannot read {what} from {}: {e}", path.display())))
}

fn parse_listen(s: &str, from: &str) -> Result<SocketAddr, ConfigError> {
    s.parse().map_err(|_| {
        ConfigError(format!(
            "invalid listen address {s:?} in {from}: use HOST:PORT, e.g. 127.0.0.1:7070"
        ))
    })
}

impl Settings {
    /// Builds settings from all layers. `env` is passed in (not read here) so tests control it.
    pub fn load(
        over: &Overrides,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        let mut s = Settings::default();
        let env_data_dir = env("OURO_DATA_DIR").map(PathBuf::from);
        // The data dir decides where ouro.toml is looked for, so resolve it from the layers above the file first.
        let data_dir_hint = over
            .data_dir
            .clone()
            .or(env_data_dir.clone())
            .unwrap_or(s.data_dir.clone());
        let config_path = over
            .config
            .clone()
            .or_else(|| env("OURO_CONFIG").map(PathBuf::from));
        let file = match &config_path {
            Some(p) => Some((
                p.clone(),
                std::fs::read_to_string(p).map_err(|e| {
                    ConfigError(format!("cannot read config file {}: {e}", p.display()))
                })?,
            )),
            None => {
                let p = data_dir_hint.join("ouro.toml");
                std::fs::read_to_string(&p).ok().map(|t| (p, t))
            }
        };
        if let Some((path, text)) = file {
            let f: FileConfig = toml::from_str(&text)
                .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
            let from = path.display().to_string();
            if let Some(v) = f.data_dir {
                s.data_dir = v;
            }
            if let Some(v) = f.listen {
                s.listen = parse_listen(&v, &from)?;
            }
            if let Some(v) = f.database_url {
                s.database_url = Some(v);
            }
            if let Some(p) = f.database_url_file {
                s.database_url = Some(read_secret_file(&p, "the database URL")?);
            }
            if let Some(p) = f.secret_key_file {
                s.secret_key = Some(read_secret_file(&p, "the secret key")?);
            }
            if let Some(v) = f.max_body_bytes {
                s.max_body_bytes = v;
            }
            if let Some(v) = f.attachment_max_bytes {
                s.attachment_max_bytes = v;
            }
            if let Some(v) = f.public_url {
                s.public_url = Some(v);
            }
            if let Some(v) = f.throttle_per_account {
                s.throttle_per_account = v;
            }
            if let Some(v) = f.throttle_per_ip {
                s.throttle_per_ip = v;
            }
            if let Some(v) = f.throttle_window_secs {
                s.throttle_window_secs = v;
            }
            if let Some(v) = f.webhook_max_attempts {
                s.webhook_max_attempts = v;
            }
            if let Some(v) = f.webhook_retry_base_ms {
                s.webhook_retry_base_ms = v;
            }
            if let Some(v) = f.webhook_timeout_secs {
                s.webhook_timeout_secs = v;
            }
            if let Some(v) = f.shutdown_grace_secs {
                s.shutdown_grace_secs = v;
            }
            if let Some(v) = f.git_fetch_timeout_secs {
                s.git_fetch_timeout_secs = v;
            }
            if let Some(v) = f.push_max_bytes {
                s.push_max_bytes = v;
            }
            if let Some(v) = f.push_max_file_bytes {
                s.push_max_file_bytes = v;
            }
            if let Some(v) = f.artifacts {
                ouro_build::artifacts::parse_expire_in(&v.default_expire_in).map_err(|m| {
                    ConfigError(format!("{from}: artifacts.default_expire_in: {m}"))
                })?;
                s.artifacts = v;
            }
            if let Some(v) = f.blobs {
                s.blobs = v;
            }
            if let Some(r) = f.runner {
                if let Some(v) = r.slots {
                    s.runner_slots = v;
                }
                if let Some(v) = r.labels {
                    s.runner_labels = v;
                }
                if let Some(v) = r.sandbox {
                    s.runner_sandbox = v;
                }
            }
            if let Some(d) = f.deploy {
                if let Some(v) = d.listen {
                    s.deploy_listen = v;
                }
                if let Some(v) = d.ready_timeout_secs {
                    s.deploy_ready_timeout_secs = v;
                }
                if let Some(v) = d.keep_versions {
                    s.deploy_keep_versions = v;
                }
                if let Some(v) = d.target {
                    s.deploy_target = v;
                }
                if let Some(v) = d.kubernetes {
                    s.deploy_kubernetes = v;
                }
            }
            if let Some(b) = f.build {
                if let Some(v) = b.log_cap_bytes {
                    s.build_log_cap_bytes = v;
                }
                if let Some(v) = b.lease_seconds {
                    s.build_lease_seconds = v;
                }
            }
        }
        // Environment.
        if let Some(v) = env_data_dir {
            s.data_dir = v;
        }
        if let Some(v) = env("OURO_LISTEN") {
            s.listen = parse_listen(&v, "OURO_LISTEN")?;
        }
        if let Some(v) = env("OURO_DATABASE_URL") {
            s.database_url = Some(v);
        }
        if let Some(p) = env("OURO_DATABASE_URL_FILE") {
            s.database_url = Some(read_secret_file(Path::new(&p), "the database URL")?);
        }
        if let Some(v) = env("OURO_SECRET_KEY") {
            s.secret_key = Some(v);
        }
        if let Some(p) = env("OURO_SECRET_KEY_FILE") {
            s.secret_key = Some(read_secret_file(Path::new(&p), "the secret key")?);
        }
        if let Some(v) = env("OURO_MAX_BODY_BYTES") {
            s.max_body_bytes = v.parse().map_err(|_| {
                ConfigError(format!(
                    "OURO_MAX_BODY_BYTES={v:?} is not a number of bytes"
                ))
            })?;
        }
        if let Some(v) = env("OURO_ATTACHMENT_MAX_BYTES") {
            s.attachment_max_bytes = v.parse().map_err(|_| {
                ConfigError(format!(
                    "OURO_ATTACHMENT_MAX_BYTES={v:?} is not a number of bytes"
                ))
            })?;
        }
        for (key, slot) in [
            ("OURO_PUSH_MAX_BYTES", &mut s.push_max_bytes),
            ("OURO_PUSH_MAX_FILE_BYTES", &mut s.push_max_file_bytes),
        ] {
            if let Some(v) = env(key) {
                *slot = v
                    .parse()
                    .map_err(|_| ConfigError(format!("{key}={v:?} is not a number of bytes")))?;
            }
        }
        if let Some(v) = env("OURO_PUBLIC_URL") {
            s.public_url = Some(v);
        }
        if let Some(v) = env("OURO_GIT_FETCH_TIMEOUT_SECS") {
            s.git_fetch_timeout_secs = v.parse().map_err(|_| {
                ConfigError(format!(
                    "OURO_GIT_FETCH_TIMEOUT_SECS={v:?} is not a number of seconds"
                ))
            })?;
        }
        if let Some(v) = env("OURO_BUILD_LOG_CAP_BYTES") {
            s.build_log_cap_bytes = v.parse().map_err(|_| {
                ConfigError(format!(
                    "OURO_BUILD_LOG_CAP_BYTES={v:?} is not a number of bytes"
                ))
            })?;
        }
        if let Some(v) = env("OURO_BUILD_LEASE_SECONDS") {
            s.build_lease_seconds = v.parse().map_err(|_| {
                ConfigError(format!(
                    "OURO_BUILD_LEASE_SECONDS={v:?} is not a number of seconds"
                ))
            })?;
        }
        if let Some(v) = env("OURO_DEPLOY_LISTEN") {
            s.deploy_listen = v;
        }
        if let Some(v) = env("OURO_DEPLOY_TARGET") {
            s.deploy_target = v;
        }
        if !matches!(s.deploy_target.as_str(), "local" | "kubernetes") {
            return Err(ConfigError(format!(
                "deploy target {:?} is not `local` or `kubernetes`",
                s.deploy_target
            )));
        }
        if s.deploy_target == "kubernetes" {
            s.deploy_kubernetes
                .check()
                .map_err(|e| ConfigError(format!("[deploy.kubernetes]: {e}")))?;
        }
        if let Some(v) = env("OURO_RUNNER_SANDBOX") {
            s.runner_sandbox = match v.as_str() {
                "1" | "true" => true,
                "0" | "false" | "" => false,
                _ => {
                    return Err(ConfigError(format!(
                        "OURO_RUNNER_SANDBOX={v:?} is not true or false"
                    )));
                }
            };
        }
        if let Some(v) = env("OURO_RUNNER_SLOTS") {
            s.runner_slots = v.parse().map_err(|_| {
                ConfigError(format!("OURO_RUNNER_SLOTS={v:?} is not a number of slots"))
            })?;
        }
        s.blobs.apply_env(env).map_err(ConfigError)?;
        s.blobs.validate().map_err(ConfigError)?;
        // Flags.
        if let Some(v) = &over.data_dir {
            s.data_dir = v.clone();
        }
        if let Some(v) = &over.listen {
            s.listen = parse_listen(v, "--listen")?;
        }
        if let Some(v) = &over.database_url {
            s.database_url = Some(v.clone());
        }
        if s.push_max_bytes == 0 || s.push_max_file_bytes == 0 {
            return Err(ConfigError(
                "push_max_bytes and push_max_file_bytes must be at least 1".into(),
            ));
        }
        let (lo, hi) = (
            ouro_build::runner::MIN_LEASE_SECS,
            ouro_build::runner::MAX_LEASE_SECS,
        );
        if !(lo..=hi).contains(&s.build_lease_seconds) {
            return Err(ConfigError(format!(
                "build.lease_seconds is {}; it must be from {lo} to {hi} (runners heartbeat every 2 s)",
                s.build_lease_seconds
            )));
        }
        if s.max_body_bytes < 1024 {
            return Err(ConfigError("max_body_bytes must be at least 1024".into()));
        }
        Ok(s)
    }

    /// The database URL in effect.
    pub fn effective_database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("ouro.db").display()))
    }

    /// The base URL for links Ouro prints.
    pub fn base_url(&self, bound: SocketAddr) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{bound}"))
            .trim_end_matches('/')
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of<'a>(m: &'a HashMap<&'a str, String>) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| m.get(k).cloned()
    }

    #[test]
    fn layers_apply_in_order_and_debug_redacts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("ouro.toml"),
            "listen = \"127.0.0.1:9001\"\nmax_body_bytes = 4096\ndatabase_url = \"postgres://u:pw@h/db\"\n",
        )
        .unwrap();
        let secret = dir.path().join("key");
        std::fs::write(&secret, "topsecret\n").unwrap();
        let mut env = HashMap::new();
        env.insert("OURO_MAX_BODY_BYTES", "8192".to_string());
        env.insert("OURO_SECRET_KEY_FILE", secret.display().to_string());
        let over = Overrides {
            data_dir: Some(dir.path().into()),
            ..Default::default()
        };
        let s = Settings::load(&over, &env_of(&env)).unwrap();
        assert_eq!(s.listen.port(), 9001, "file beats default");
        assert_eq!(s.max_body_bytes, 8192, "env beats file");
        assert_eq!(
            s.secret_key.as_deref(),
            Some("topsecret"),
            "_FILE variant read and trimmed"
        );
        let over = Overrides {
            listen: Some("127.0.0.1:9002".into()),
            data_dir: Some(dir.path().into()),
            ..Default::default()
        };
        let s = Settings::load(&over, &env_of(&env)).unwrap();
        assert_eq!(s.listen.port(), 9002, "flag beats file");
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("topsecret") && !dbg.contains(":pw@"), "{dbg}");
    }

    #[test]
    fn deploy_settings_layer_and_a_bad_target_is_explained() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("ouro.toml"),
            "[deploy]\nlisten = \"0.0.0.0:80\"\nkeep_versions = 5\ntarget = \"kubernetes\"\n[deploy.kubernetes]\nimage = \"app:1\"\n",
        )
        .unwrap();
        let over = Overrides {
            data_dir: Some(dir.path().into()),
            ..Default::default()
        };
        let s = Settings::load(&over, &|_| None).unwrap();
        assert_eq!(s.deploy_listen, "0.0.0.0:80");
        assert_eq!(s.deploy_target, "kubernetes");
        assert_eq!(s.deploy_keep_versions, 5);
        assert_eq!(s.deploy_kubernetes.image, "app:1");
        assert_eq!(
            s.deploy_kubernetes.namespace,
            "ouro-{project}-{environment}"
        );
        let e = Settings::load(&over, &|k| {
            (k == "OURO_DEPLOY_TARGET").then(|| "nomad".into())
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("nomad") && e.contains("`local` or `kubernetes`"),
            "{e}"
        );
        std::fs::write(
            dir.path().join("ouro.toml"),
            "[deploy]\ntarget = \"kubernetes\"\n[deploy.kubernetes]\nnamespace = \"ouro\"\n",
        )
        .unwrap();
        let e = Settings::load(&over, &|_| None).unwrap_err().to_string();
        assert!(
            e.contains("[deploy.kubernetes]") && e.contains("{environment}"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ouro.toml"), "lisen = \"x\"\n").unwrap();
        let over = Overrides {
            data_dir: Some(dir.path().into()),
            ..Default::default()
        };
        let e = Settings::load(&over, &|_| None).unwrap_err().to_string();
        assert!(e.contains("ouro.toml") && e.contains("lisen"), "{e}");
        let over = Overrides {
            listen: Some("nope".into()),
            ..Default::default()
        };
        let e = Settings::load(&over, &|_| None).unwrap_err().to_string();
        assert!(e.contains("--listen"), "{e}");
    }

    #[test]
    fn the_build_lease_comes_from_the_file_or_the_env_within_its_range() {
        let dir = tempfile::tempdir().unwrap();
        let over = Overrides {
            data_dir: Some(dir.path().into()),
            ..Default::default()
        };
        assert_eq!(
            Settings::load(&over, &|_| None)
                .unwrap()
                .build_lease_seconds,
            30
        );
        std::fs::write(
            dir.path().join("ouro.toml"),
            "[build]\nlease_seconds = 90\n",
        )
        .unwrap();
        assert_eq!(
            Settings::load(&over, &|_| None)
                .unwrap()
                .build_lease_seconds,
            90
        );
        let env = |k: &str| (k == "OURO_BUILD_LEASE_SECONDS").then(|| "120".to_string());
        assert_eq!(
            Settings::load(&over, &env).unwrap().build_lease_seconds,
            120
        );
        for bad in ["3", "100000"] {
            let env = |k: &str| (k == "OURO_BUILD_LEASE_SECONDS").then(|| bad.to_string());
            let e = Settings::load(&over, &env).unwrap_err().to_string();
            assert!(
                e.contains("lease_seconds") && e.contains("from 6 to 3600"),
                "{e}"
            );
        }
        let env = |k: &str| (k == "OURO_BUILD_LEASE_SECONDS").then(|| "soon".to_string());
        let e = Settings::load(&over, &env).unwrap_err().to_string();
        assert!(e.contains("OURO_BUILD_LEASE_SECONDS"), "{e}");
    }

    #[test]
    fn the_runner_sandbox_comes_from_the_file_or_the_env() {
        let dir = tempfile::tempdir().unwrap();
        let over = Overrides {
            data_dir: Some(dir.path().into()),
            ..Default::default()
        };
        assert!(!Settings::load(&over, &|_| None).unwrap().runner_sandbox);
        std::fs::write(dir.path().join("ouro.toml"), "[runner]\nsandbox = true\n").unwrap();
        let s = Settings::load(&over, &|_| None).unwrap();
        assert!(s.runner_sandbox);
        assert!(format!("{s:?}").contains("runner_sandbox: true"));
        let env = |k: &str| (k == "OURO_RUNNER_SANDBOX").then(|| "false".to_string());
        assert!(!Settings::load(&over, &env).unwrap().runner_sandbox);
        let env = |k: &str| (k == "OURO_RUNNER_SANDBOX").then(|| "maybe".to_string());
        let e = Settings::load(&over, &env).unwrap_err().to_string();
        assert!(e.contains("OURO_RUNNER_SANDBOX"), "{e}");
    }

    #[test]
    fn blobs_settings_layer_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("ouro.toml"),
            "[blobs]\nbackend = \"s3\"\nbucket = \"from-file\"\nprefix = \"ouro/\"\n",
        )
        .unwrap();
        let over = Overrides {
            data_dir: Some(dir.path().into()),
            ..Default::default()
        };
        let env = |k: &str| (k == "OURO_BLOBS_BUCKET").then(|| "from-env".to_string());
        let s = Settings::load(&over, &env).unwrap();
        assert_eq!(s.blobs.backend, ouro_build::blobs_s3::BlobBackend::S3);
        assert_eq!(
            s.blobs.bucket.as_deref(),
            Some("from-env"),
            "env beats file"
        );
        assert_eq!(s.blobs.prefix, "ouro/");
        std::fs::write(dir.path().join("ouro.toml"), "[blobs]\nbackend = \"s3\"\n").unwrap();
        let e = Settings::load(&over, &|_| None).unwrap_err().to_string();
        assert!(e.contains("blobs.bucket"), "{e}");
    }

    #[test]
    fn default_toml_parses() {
        let _: FileConfig = toml::from_str(DEFAULT_TOML).unwrap();
    }
}
