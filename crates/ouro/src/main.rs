//! The `ouro` command. Thin: it parses flags, loads settings and calls into the library crates.

mod cr;
mod deploy;
mod items;
mod lint;
mod pipeline;
mod release;
mod release_cli;
mod release_promote;
mod release_verify;
mod run;
mod runner;
mod test_report;
mod vars;

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use ouro_core::Actor;
use ouro_server::{Overrides, Settings};

/// Two glibc malloc settings, each left to the environment when it sets it (`MALLOC_ARENA_MAX`,
/// `MALLOC_MMAP_THRESHOLD_` or the same in `GLIBC_TUNABLES`). Set before any thread starts.
/// - glibc gives each thread that allocates under contention an arena of its own, up to eight per
///   core, and keeps their free memory: a server with tokio workers, SQLite and blocking threads
///   held several MB more than it used. Two arenas are enough for this process.
/// - Build logs move in 1 MB segments (written, compressed, read back). glibc raises its mmap
///   threshold to the size of the first mapped block freed, so later segments came from the heap
///   and left holes there that stayed resident (2-3 MB of the pipeline benchmark's peak). With
///   the threshold fixed at 1 MB, each segment is its own mapping, returned whole when freed.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
        let unset = |var: &str, tunable: &str| {
            std::env::var_os(var).is_none() && !tunables.contains(tunable)
        };
        // SAFETY: mallopt only changes allocator settings; no other thread exists yet.
        unsafe {
            if unset("MALLOC_ARENA_MAX", "glibc.malloc.arena_max") {
                libc::mallopt(libc::M_ARENA_MAX, 2);
            }
            if unset("MALLOC_MMAP_THRESHOLD_", "glibc.malloc.mmap_threshold") {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
            }
        }
    }
}

#[derive(Parser)]
#[command(
    name = "ouro",
    version,
    about = "Ouro: the whole DevOps loop in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (API, web UI, background workers).
    Serve(ServeArgs),
    /// Administer users and tokens directly on the data dir or database (works while offline).
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Configuration helpers.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Work items on a running server (needs --token or OURO_TOKEN).
    #[command(subcommand)]
    Items(items::ItemsCommand),
    /// Change requests on a running server (needs --token or OURO_TOKEN).
    #[command(subcommand)]
    Cr(cr::CrCommand),
    /// A project's pipeline secrets on a running server (needs --token or OURO_TOKEN).
    #[command(subcommand)]
    Secret(vars::VarsCommand),
    /// A project's pipeline variables on a running server (needs --token or OURO_TOKEN).
    #[command(subcommand)]
    Var(vars::VarsCommand),
    /// Check pipeline, services and environments files (default: .ouro/pipelines/*.yml,
    /// .ouro/services.yml, .ouro/environments.yml); exit 1 on errors, 2 on usage errors.
    Lint(lint::LintArgs),
    /// Run the checkout's pipelines on this machine (jobs use the committed HEAD); exit 0 only
    /// when every job succeeded, 1 otherwise, 2 on usage errors.
    Run(run::RunArgs),
    /// Run a runner that executes pipeline jobs for a server (registers with --token first).
    Runner(runner::RunnerArgs),
    /// Test reports without a server: `ouro test-report parse [--json] FILE...` prints the
    /// normalised summary of JUnit XML and coverage files; exit 0 when they parsed, 2 when not.
    #[command(subcommand)]
    TestReport(test_report::TestReportCommand),
    /// Start (`--input k=v`), cancel and re-run pipeline runs on a running server (needs --token
    /// or OURO_TOKEN).
    #[command(subcommand)]
    Pipeline(pipeline::PipelineCommand),
    /// Releases: `ouro release verify BUNDLE [--key HEX|FILE]` checks a bundle offline (exit 0
    /// and `ok` when intact, 1 naming the file that does not match); the other commands talk to a
    /// running server (needs --token or OURO_TOKEN).
    #[command(subcommand)]
    Release(release::ReleaseCommand),
    /// Deployments on a running server: `ouro deploy status|rollout|rollback --env E` (needs
    /// --token or OURO_TOKEN).
    #[command(subcommand)]
    Deploy(deploy::DeployCommand),
}

#[derive(Args, Clone)]
struct StoreArgs {
    /// The data directory (default ./ouro-data). Env: OURO_DATA_DIR.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A database URL (sqlite://PATH or postgres://...); default: SQLite in the data dir. Env: OURO_DATABASE_URL.
    #[arg(long)]
    database_url: Option<String>,
    /// A config file (default DATA_DIR/ouro.toml). Env: OURO_CONFIG.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The address to listen on (default 127.0.0.1:7070). Env: OURO_LISTEN.
    #[arg(long)]
    listen: Option<String>,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create a user. The password is read from standard input.
    CreateUser {
        #[command(flatten)]
        store: StoreArgs,
        /// The user name (a-z, 0-9, '-').
        #[arg(long)]
        name: String,
        /// Make the user an instance administrator.
        #[arg(long)]
        admin: bool,
        /// Read the password from standard input (required: passwords never go on the command line).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Create a personal API token for a user and print it (alone on the last line).
    CreateToken {
        #[command(flatten)]
        store: StoreArgs,
        /// The user the token acts as.
        #[arg(long)]
        user: String,
        /// The token's scope: api (default) or read_api. Repeat for several.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Days until the token expires (default: never).
        #[arg(long)]
        expires: Option<i64>,
        /// A name to recognise the token by (default: "cli").
        #[arg(long, default_value = "cli")]
        name: String,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print a commented default ouro.toml.
    Default,
}

fn settings(store: &StoreArgs, listen: Option<String>) -> anyhow::Result<Settings> {
    let over = Overrides {
        config: store.config.clone(),
        data_dir: store.data_dir.clone(),
        listen,
        database_url: store.database_url.clone(),
    };
    Ok(Settings::load(&over, &|k| std::env::var(k).ok())?)
}

fn main() -> anyhow::Result<()> {
    // `ouro __exec-limits ...`: this process is the exec wrapper of a job's step (never returns).
    ouro_build::exec::spawn::run_if_wrapper();
    tune_malloc();
    // Steps start through this binary (`/proc/self/exe`: still valid after an upgrade replaced
    // the file) instead of forking the server for each process.
    ouro_build::exec::spawn::set_wrapper("/proc/self/exe");
    let cli = Cli::parse();
    // Offline and synchronous: no runtime, no logging set-up.
    if let Command::Lint(args) = cli.command {
        std::process::exit(lint::run(args));
    }
    if let Command::Run(args) = cli.command {
        std::process::exit(run::run(args));
    }
    if let Command::TestReport(cmd) = cli.command {
        std::process::exit(test_report::run(cmd));
    }
    if let Command::Release(release::ReleaseCommand::Verify(args)) = cli.command {
        std::process::exit(release_verify::run(args));
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OURO_LOG")
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(a) => serve(a).await,
        Command::Admin(AdminCommand::CreateUser {
            store,
            name,
            admin,
            password_stdin,
        }) => {
            debug_assert!(password_stdin);
            let mut pw = String::new();
            std::io::stdin()
                .read_to_string(&mut pw)
                .context("cannot read the password from standard input")?;
            let pw = pw.trim_end_matches(['\r', '\n']);
            let settings = settings(&store, None)?;
            let st = ouro_server::open_store(&settings).await?;
            let user =
                ouro_store::accounts::create_user(&st, &Actor::System("cli"), &name, pw, admin)
                    .await
                    .map_err(|e| anyhow::anyhow!(ouro_core::OuroError::from(e).message))?;
            st.close().await;
            println!(
                "created user {}{}",
                user.name,
                if user.is_admin { " (admin)" } else { "" }
            );
            Ok(())
        }
        Command::Admin(AdminCommand::CreateToken {
            store,
            user,
            scopes,
            expires,
            name,
        }) => {
            let settings = settings(&store, None)?;
            let st = ouro_server::open_store(&settings).await?;
            let u = ouro_store::accounts::user_by_name(&mut st.read().await?, &user)
                .await?
                .with_context(|| {
                    format!("no user named {user:?}; create it with `ouro admin create-user`")
                })?;
            let scopes = if scopes.is_empty() {
                vec!["api".to_string()]
            } else {
                scopes
            };
            let (token, secret) = ouro_store::accounts::create_token(
                &st,
                &Actor::System("cli"),
                &u,
                &name,
                &scopes,
                expires,
            )
            .await
            .map_err(|e| anyhow::anyhow!(ouro_core::OuroError::from(e).message))?;
            st.close().await;
            println!(
                "created token {} for {} (scopes: {})",
                token.id,
                u.name,
                token.scopes.join(",")
            );
            println!("{secret}");
            Ok(())
        }
        Command::Items(cmd) => items::run(cmd).await,
        Command::Cr(cmd) => cr::run(cmd).await,
        Command::Release(cmd) => release::run(cmd).await,
        Command::Deploy(cmd) => deploy::run(cmd).await,
        Command::Secret(cmd) => vars::run(vars::Which::Secret, cmd).await,
        Command::Var(cmd) => vars::run(vars::Which::Var, cmd).await,
        Command::Runner(a) => runner::run(a).await,
        Command::Pipeline(cmd) => pipeline::run(cmd).await,
        Command::Lint(_) | Command::Run(_) | Command::TestReport(_) => {
            unreachable!("handled before the runtime starts")
        }
        Command::Config(ConfigCommand::Default) => {
            print!("{}", ouro_server::settings::DEFAULT_TOML);
            Ok(())
        }
    }
}

async fn serve(a: ServeArgs) -> anyhow::Result<()> {
    // Code hosting runs `git http-backend`: refuse to start without git.
    let git = ouro_server::git_http::require_git()
        .await
        .map_err(anyhow::Error::msg)?;
    tracing::info!("using {git}");
    let settings = settings(&a.store, a.listen)?;
    tracing::debug!(?settings, "settings");
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}: is another server using the port? Use --listen to pick another", settings.listen))?;
    if let Err(e) = ouro_server::launch(settings, listener, shutdown_signal()).await {
        bail!("{e}");
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
