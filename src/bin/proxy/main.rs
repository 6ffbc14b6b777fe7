//! The `proxy` command: parse the command line, load the config, start logging, and run the
//! proxy until SIGINT or SIGTERM (SIGHUP reloads the config) — or run one of the operator
//! commands.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use asset_proxy::{App, Config};
use clap::Parser;
use tracing_subscriber::EnvFilter;

mod cli;
mod operate;

use cli::{Cli, Command, ConfigCommand, LogFormat, Options, DEFAULT_CONFIG};
use operate::operate;

/// Sends allocations of 256 KiB and more (response bodies) to mmap, so that freeing them
/// gives the memory back. By default glibc raises this threshold by itself after the first
/// large free, and MiB-sized bodies then come from per-thread arenas that keep what is freed:
/// under a sustained load of new assets resident memory grew well past `memory.max_mb` + 64
/// MiB (see BENCHMARKS.md). Called first thing, before any thread exists.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn return_large_allocations() {
    // SAFETY: mallopt only sets an allocator parameter, takes no pointers, and is called
    // before any other thread is started.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_large_allocations() {}

fn main() -> ExitCode {
    return_large_allocations();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("proxy: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let options = cli.options;
    if let Some(Command::Config(ConfigCommand::Check { file })) = &cli.command {
        Config::load(file)?;
        println!("{}: valid", file.display());
        return Ok(ExitCode::SUCCESS);
    }
    init_logging(&options, cli.command.is_none())?;
    let (config, config_path) = load_config(&options)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    match cli.command {
        None => runtime.block_on(serve(config, config_path, &options)),
        Some(command) => runtime.block_on(operate(command, config, &options)),
    }
}

/// Log targets never shown.
const SILENCED: &str = "fast_socks5=off";

fn init_logging(options: &Options, serving: bool) -> anyhow::Result<()> {
    // Commands print their own results; their logs stay quiet unless asked for.
    let level = if serving || options.log != "info" {
        options.log.as_str()
    } else {
        "warn"
    };
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .with_context(|| format!("invalid --log filter {:?}", options.log))?
        // The SOCKS5 server library logs the credentials clients send at debug level: never
        // shown, whatever the filter asks for.
        .add_directive(SILENCED.parse().context("log directive")?);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| asset_proxy::log_lines::LogLines);
    match options.log_format {
        LogFormat::Json => builder
            .json()
            .event_format(asset_proxy::log_format::FlatJson::default())
            .init(),
        LogFormat::Text if std::io::stderr().is_terminal() => builder.with_ansi(true).init(),
        LogFormat::Text => builder
            .event_format(asset_proxy::log_format::PlainText)
            .init(),
    }
    Ok(())
}

/// The config file's settings with the command line's on top, and the file they came from.
fn load_config(options: &Options) -> anyhow::Result<(Config, Option<PathBuf>)> {
    let path = match &options.config {
        Some(path) => Some(path.clone()),
        None => Path::new(DEFAULT_CONFIG)
            .exists()
            .then(|| PathBuf::from(DEFAULT_CONFIG)),
    };
    let mut config = match &path {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    config.cache.dir = options.cache_dir.clone();
    config.mitm.ca_dir = options.ca_dir.clone();
    config.upstream.extra_roots = options.upstream_ca.clone();
    if let Some(text) = options.upstream_proxy.as_deref().filter(|u| !u.is_empty()) {
        config
            .upstream
            .set_default_proxy(text)
            .map_err(|e| anyhow::anyhow!("--upstream-proxy: {e}"))?;
    }
    if let Some(urls) = options.shared_cache.as_deref().filter(|u| !u.is_empty()) {
        config
            .cache
            .shared
            .set_nodes(urls)
            .map_err(|e| anyhow::anyhow!("--shared-cache: {e}"))?;
    }
    config.policy.mode = options.mode();
    config.clients.require_namespace |= options.require_namespace;
    if let Some(socks) = options.socks {
        config.clients.socks = socks == cli::Switch::On;
    }
    config.admin.token = options.admin_token.clone().filter(|t| !t.is_empty());
    if let Some(path) = &options.admin_token_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--admin-token-file {}", path.display()))?;
        let token = text.lines().next().unwrap_or("").trim().to_owned();
        anyhow::ensure!(
            !token.is_empty(),
            "--admin-token-file {}: the file's first line is empty",
            path.display()
        );
        config.admin.token = Some(token);
    }
    if let Ok(text) = std::env::var("ASSET_PROXY_AUTH") {
        let credentials = asset_proxy::config::Credentials::parse(&text)
            .context("ASSET_PROXY_AUTH must be user:password, both non-empty")?;
        config.clients.credentials = Some(credentials);
    }
    Ok((config, path))
}

async fn serve(
    config: Config,
    config_path: Option<PathBuf>,
    options: &Options,
) -> anyhow::Result<ExitCode> {
    if !options.bind.is_loopback() {
        anyhow::ensure!(
            options.allow_remote,
            "--bind {} lets other machines use the proxy: pass --allow-remote, and set proxy credentials",
            options.bind
        );
        anyhow::ensure!(
            config.clients.credentials.is_some(),
            "--allow-remote needs proxy credentials: clients.proxy_auth in the config, or ASSET_PROXY_AUTH=user:password"
        );
    }
    let app = std::sync::Arc::new(App::new(config)?);
    let addr = SocketAddr::new(options.bind, options.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let admin_addr = options.admin_addr();
    let admin = tokio::net::TcpListener::bind(admin_addr)
        .await
        .with_context(|| {
            format!("cannot listen on {admin_addr} for the admin API (see --admin-port)")
        })?;
    let shutdown = shutdown_signal()?;
    let reloads = reload_on_hangup(app.clone(), config_path, options)?;
    app.run(listener, Some(admin), shutdown)
        .await
        .context("cannot serve clients")?;
    reloads.abort();
    Ok(ExitCode::SUCCESS)
}

/// On SIGHUP, reloads rules and cache policy from the config file; keeps the old ones when
/// the new file is invalid.
fn reload_on_hangup(
    app: std::sync::Arc<App>,
    path: Option<PathBuf>,
    options: &Options,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let mode = options.mode();
    Ok(tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let Some(path) = &path else {
                tracing::warn!("SIGHUP: no config file to reload (built-in defaults in use)");
                continue;
            };
            match Config::load(path) {
                Ok(mut config) => {
                    config.policy.mode = mode;
                    let changed = app.reload(&config);
                    tracing::info!(file = %path.display(), changed = ?changed, "config reloaded");
                }
                Err(error) => {
                    tracing::error!(error = %error, "config reload failed; the previous config stays in force")
                }
            }
        }
    }))
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed here, before the proxy says it
/// is listening, so a signal sent right after that line is never missed.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}
