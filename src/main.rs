//! The `proxy` command: parse the command line, load the config, start logging, and run the
//! proxy until SIGINT or SIGTERM (SIGHUP reloads the config) — or run one of the operator
//! commands.

use std::io::{IsTerminal, Read};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use asset_proxy::ca::CertAuthority;
use asset_proxy::cache::Purge;
use asset_proxy::commands::{self, CacheTarget};
use asset_proxy::{App, Config};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};
use tracing_subscriber::EnvFilter;

/// An intercepting HTTP caching proxy for versioned web assets.
///
/// Point a browser, Playwright, curl or a scraper at it (HTTP proxy on --bind:--port). HTTPS is
/// intercepted with the proxy's own CA, created in --ca-dir on first run: make clients trust
/// <ca-dir>/ca.pem. Versioned assets (main.dart.js?v=abc, /v123/app.js, app.3f2a9c1b.js) are
/// served from memory, then from disk in --cache-dir, and fetched once when missing; other
/// responses are cached as HTTP caching rules allow.
#[derive(Debug, Parser)]
#[command(name = "proxy", version)]
struct Cli {
    #[command(flatten)]
    options: Options,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Args)]
struct Options {
    /// Port to listen on (0 picks a free one; the log says which).
    #[arg(long, default_value_t = 8080, global = true)]
    port: u16,

    /// Address to listen on. Keep the default unless other machines must reach the proxy.
    #[arg(long, default_value = "127.0.0.1", global = true)]
    bind: IpAddr,

    /// Directory of the disk tier; created when missing; may be shared by several proxies.
    #[arg(long, default_value = "cache", global = true)]
    cache_dir: PathBuf,

    /// Directory holding the CA (ca.pem, ca-key.pem); created with a new CA when missing.
    #[arg(long, default_value = "certs", global = true)]
    ca_dir: PathBuf,

    /// Config file (JSON). Default: config/proxy.json when it exists, else built-in defaults.
    #[arg(long, global = true)]
    config: Option<PathBuf>,

    /// Extra PEM root certificates trusted for origin TLS, on top of the standard web roots.
    #[arg(long, global = true)]
    upstream_ca: Option<PathBuf>,

    /// An HTTP proxy to reach origins through, with CONNECT: http://[user:password@]host:port
    /// (overrides upstream.proxy). Cache hits never go through it.
    #[arg(
        long,
        global = true,
        env = "ASSET_PROXY_UPSTREAM_PROXY",
        hide_env_values = true
    )]
    upstream_proxy: Option<String>,

    /// A Redis the proxies of a fleet share as a third cache tier: redis://[user:password@]host:port
    /// (several comma-separated nodes for a Redis Cluster; overrides shared.redis).
    #[arg(
        long,
        global = true,
        env = "ASSET_PROXY_SHARED_CACHE",
        hide_env_values = true
    )]
    shared_cache: Option<String>,

    /// Allow listening on a non-loopback --bind address. Requires proxy credentials
    /// (clients.proxy_auth in the config, or ASSET_PROXY_AUTH=user:password).
    #[arg(long, global = true)]
    allow_remote: bool,

    /// Serve only from the cache (stale entries included) and never contact an origin; a
    /// miss gets a 504 naming the URL. For reproducible runs and working without a network.
    #[arg(long, global = true)]
    offline: bool,

    /// Port of the admin API (stats, metrics, purge, status page), on 127.0.0.1. Default: the
    /// proxy port + 1 (a free one when --port is 0).
    #[arg(long, global = true)]
    admin_port: Option<u16>,

    /// Bearer token the admin API requires (also ASSET_PROXY_ADMIN_TOKEN). Without one the
    /// admin API serves loopback clients only.
    #[arg(
        long,
        env = "ASSET_PROXY_ADMIN_TOKEN",
        global = true,
        hide_env_values = true
    )]
    admin_token: Option<String>,

    /// A file holding the admin API's bearer token (first line), so that it shows neither in
    /// `ps` nor in the environment. Overrides --admin-token.
    #[arg(long, global = true)]
    admin_token_file: Option<PathBuf>,

    /// Log level or filter (error, warn, info, debug, trace, or a RUST_LOG-style filter).
    /// RUST_LOG, when set, takes precedence.
    #[arg(long, default_value = "info", global = true)]
    log: String,

    /// Log format: one readable line per event, or one JSON object per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect or purge the cache (through the running proxy's admin API, else on --cache-dir).
    #[command(subcommand)]
    Cache(CacheCommand),
    /// The CA certificate.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Fetch URLs (one a line, from FILE or - for standard input) into the cache, through the
    /// proxy on --port if one runs, else through one started for the purpose.
    Warm {
        /// File of URLs, or - for standard input.
        file: String,
        /// Fetches at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
    /// Configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
enum CacheCommand {
    /// Figures of the running proxy, or what the cache directory holds.
    Stats,
    /// Entries, optionally only those whose URL starts with PREFIX.
    Ls {
        /// URL prefix.
        prefix: Option<String>,
    },
    /// Remove entries from every tier.
    Purge {
        /// One URL (every variant of it).
        url: Option<String>,
        /// Every URL starting with this.
        #[arg(long, conflicts_with_all = ["url", "host", "asset", "all"])]
        prefix: Option<String>,
        /// Every URL on this host.
        #[arg(long, conflicts_with_all = ["url", "asset", "all"])]
        host: Option<String>,
        /// Every version of this asset identity.
        #[arg(long, conflicts_with_all = ["url", "all"])]
        asset: Option<String>,
        /// Everything.
        #[arg(long, conflicts_with = "url")]
        all: bool,
    },
    /// Read every entry and check it by checksum, and the index against the files; exits 1
    /// when anything is wrong. Works on --cache-dir, also while proxies run on it.
    Verify {
        /// Remove bad entries and leftovers and correct the index.
        #[arg(long)]
        repair: bool,
    },
}

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// Print where the CA certificate is.
    Path,
    /// Print the CA certificate (PEM), creating the CA if there is none.
    Export,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate a config file without starting; the exit code says whether it is valid.
    Check {
        /// The file.
        file: PathBuf,
    },
}

const DEFAULT_CONFIG: &str = "config/proxy.json";

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

fn init_logging(options: &Options, serving: bool) -> anyhow::Result<()> {
    // Commands print their own results; their logs stay quiet unless asked for.
    let level = if serving || options.log != "info" {
        options.log.as_str()
    } else {
        "warn"
    };
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .with_context(|| format!("invalid --log filter {:?}", options.log))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match options.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
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
    if let Some(url) = options.upstream_proxy.as_deref().filter(|u| !u.is_empty()) {
        let proxy = asset_proxy::config::ProxyUrl::parse(url)
            .map_err(|e| anyhow::anyhow!("--upstream-proxy: {e}"))?;
        config.upstream.proxy = Some(proxy);
    }
    if let Some(urls) = options.shared_cache.as_deref().filter(|u| !u.is_empty()) {
        config
            .cache
            .shared
            .set_nodes(urls)
            .map_err(|e| anyhow::anyhow!("--shared-cache: {e}"))?;
    }
    config.policy.offline = options.offline;
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

fn admin_addr(options: &Options) -> SocketAddr {
    let port = options.admin_port.unwrap_or(if options.port == 0 {
        0
    } else {
        options.port.saturating_add(1)
    });
    SocketAddr::from(([127, 0, 0, 1], port))
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
    let admin_addr = admin_addr(options);
    let admin = tokio::net::TcpListener::bind(admin_addr)
        .await
        .with_context(|| {
            format!("cannot listen on {admin_addr} for the admin API (see --admin-port)")
        })?;
    let shutdown = shutdown_signal()?;
    let reloads = reload_on_hangup(app.clone(), config_path, options)?;
    app.run(listener, Some(admin), shutdown).await;
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
    let offline = options.offline;
    Ok(tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let Some(path) = &path else {
                tracing::warn!("SIGHUP: no config file to reload (built-in defaults in use)");
                continue;
            };
            match Config::load(path) {
                Ok(mut config) => {
                    config.policy.offline = offline;
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

async fn operate(command: Command, config: Config, options: &Options) -> anyhow::Result<ExitCode> {
    match command {
        Command::Cache(CacheCommand::Verify { repair }) => {
            let clean = asset_proxy::commands::verify(&config.cache.dir, repair).await?;
            Ok(if clean {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Cache(command) => {
            let target =
                CacheTarget::find(admin_addr(options), options.admin_token.clone(), &config)
                    .await?;
            cache_command(command, &target).await
        }
        Command::Ca(CaCommand::Path) => {
            println!(
                "{}",
                config
                    .mitm
                    .ca_dir
                    .join(asset_proxy::ca::CERT_FILE)
                    .display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Ca(CaCommand::Export) => {
            let provider = asset_proxy::app::install_crypto_provider();
            let ca = CertAuthority::load_or_create(&config.mitm.ca_dir, provider)?;
            print!("{}", ca.cert_pem());
            Ok(ExitCode::SUCCESS)
        }
        Command::Warm { file, concurrency } => {
            let text = if file == "-" {
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text)?;
                text
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("cannot read {file}"))?
            };
            let urls = commands::read_urls(&text)?;
            let report = commands::warm(config, options.port, urls, concurrency).await?;
            let failures = report.failures();
            println!(
                "warmed {} of {} URLs, {} bytes in {:.1}s",
                report.outcomes.len() - failures.len(),
                report.outcomes.len(),
                report.bytes,
                report.elapsed.as_secs_f64()
            );
            for failure in &failures {
                if let Err(error) = &failure.result {
                    println!("failed: {} ({error})", failure.url);
                }
            }
            Ok(if failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Config(_) => Ok(ExitCode::SUCCESS),
    }
}

async fn cache_command(command: CacheCommand, target: &CacheTarget) -> anyhow::Result<ExitCode> {
    match command {
        CacheCommand::Stats => print_json(&target.stats().await?),
        CacheCommand::Ls { prefix } => {
            let listing = target.entries(prefix.as_deref().unwrap_or("")).await?;
            for entry in listing["entries"].as_array().into_iter().flatten() {
                let version = entry["version"]
                    .as_str()
                    .map(|v| format!("  v={v}"))
                    .unwrap_or_default();
                println!(
                    "{}  {:>10}  {}{version}",
                    entry["status"],
                    entry["body_bytes"],
                    entry["key"].as_str().unwrap_or("")
                );
            }
        }
        CacheCommand::Purge {
            url,
            prefix,
            host,
            asset,
            all,
        } => {
            let (what, body) = match (url, prefix, host, asset, all) {
                (Some(url), ..) => (Purge::Url(url.clone()), json!({ "url": url })),
                (_, Some(prefix), ..) => {
                    (Purge::Prefix(prefix.clone()), json!({ "prefix": prefix }))
                }
                (_, _, Some(host), ..) => (Purge::Host(host.clone()), json!({ "host": host })),
                (_, _, _, Some(asset), _) => {
                    (Purge::Asset(asset.clone()), json!({ "asset": asset }))
                }
                (.., true) => (Purge::All(true), json!({ "all": true })),
                _ => anyhow::bail!(
                    "say what to purge: URL, --prefix P, --host H, --asset A or --all"
                ),
            };
            let report = target.purge(&what, body).await?;
            println!(
                "removed {} from memory, {} from disk",
                report["memory"], report["disk"]
            );
        }
        CacheCommand::Verify { .. } => {}
    }
    Ok(ExitCode::SUCCESS)
}

fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}
