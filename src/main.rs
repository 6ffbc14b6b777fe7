//! The `proxy` command: parse the command line, load the config, start logging, run the
//! proxy until SIGINT or SIGTERM.

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use asset_proxy::{App, Config};
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// An intercepting HTTP caching proxy for versioned web assets.
///
/// Point a browser, Playwright, curl or a scraper at it (HTTP proxy on --bind:--port). HTTPS is
/// intercepted with the proxy's own CA, created in --ca-dir on first run: make clients trust
/// <ca-dir>/ca.pem. Versioned assets (main.dart.js?v=abc, /v123/app.js, app.3f2a9c1b.js) are
/// served from memory, then from disk in --cache-dir, and fetched once when missing.
#[derive(Debug, Parser)]
#[command(name = "proxy", version)]
struct Cli {
    /// Port to listen on (0 picks a free one; the log says which).
    #[arg(long, default_value_t = 8080)]
    port: u16,

    /// Address to listen on. Keep the default unless other machines must reach the proxy.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,

    /// Directory of the disk tier; created when missing; may be shared by several proxies.
    #[arg(long, default_value = "cache")]
    cache_dir: PathBuf,

    /// Directory holding the CA (ca.pem, ca-key.pem); created with a new CA when missing.
    #[arg(long, default_value = "certs")]
    ca_dir: PathBuf,

    /// Config file (JSON). Default: config/proxy.json when it exists, else built-in defaults.
    #[arg(long)]
    config: Option<PathBuf>,

    /// Extra PEM root certificates trusted for origin TLS, on top of the standard web roots.
    #[arg(long)]
    upstream_ca: Option<PathBuf>,

    /// Serve only from the cache (stale entries included) and never contact an origin; a
    /// miss gets a 504 naming the URL. For reproducible runs and working without a network.
    #[arg(long)]
    offline: bool,

    /// Log level or filter (error, warn, info, debug, trace, or a RUST_LOG-style filter).
    /// RUST_LOG, when set, takes precedence.
    #[arg(long, default_value = "info")]
    log: String,
}

const DEFAULT_CONFIG: &str = "config/proxy.json";

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("proxy: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cli.log))
        .with_context(|| format!("invalid --log filter {:?}", cli.log))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let mut config = match &cli.config {
        Some(path) => Config::load(path)?,
        None if std::path::Path::new(DEFAULT_CONFIG).exists() => {
            Config::load(DEFAULT_CONFIG.as_ref())?
        }
        None => Config::default(),
    };
    config.cache.dir = cli.cache_dir;
    config.mitm.ca_dir = cli.ca_dir;
    config.upstream.extra_roots = cli.upstream_ca;
    config.policy.offline = cli.offline;

    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let app = App::new(config)?;
        let addr = SocketAddr::new(cli.bind, cli.port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        app.run(listener, shutdown_signal()?).await;
        Ok(())
    })
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
