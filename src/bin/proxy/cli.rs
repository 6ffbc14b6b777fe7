//! The command line: the proxy's options, and the operator commands.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// An intercepting HTTP caching proxy for versioned web assets.
///
/// Point a browser, Playwright, curl or a scraper at it (HTTP proxy on --bind:--port). HTTPS is
/// intercepted with the proxy's own CA, created in --ca-dir on first run: make clients trust
/// <ca-dir>/ca.pem. Versioned assets (main.dart.js?v=abc, /v123/app.js, app.3f2a9c1b.js) are
/// served from memory, then from disk in --cache-dir, and fetched once when missing; other
/// responses are cached as HTTP caching rules allow.
#[derive(Debug, Parser)]
#[command(name = "proxy", version)]
pub struct Cli {
    #[command(flatten)]
    pub options: Options,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Args)]
pub struct Options {
    /// Port to listen on (0 picks a free one; the log says which).
    #[arg(long, default_value_t = 8080, global = true)]
    pub port: u16,

    /// Address to listen on. Keep the default unless other machines must reach the proxy.
    #[arg(long, default_value = "127.0.0.1", global = true)]
    pub bind: IpAddr,

    /// Directory of the disk tier; created when missing; may be shared by several proxies.
    #[arg(long, default_value = "cache", global = true)]
    pub cache_dir: PathBuf,

    /// Directory holding the CA (ca.pem, ca-key.pem); created with a new CA when missing.
    #[arg(long, default_value = "certs", global = true)]
    pub ca_dir: PathBuf,

    /// Config file (JSON). Default: config/proxy.json when it exists, else built-in defaults.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,

    /// Extra PEM root certificates trusted for origin TLS, on top of the standard web roots.
    #[arg(long, global = true, env = "ASSET_PROXY_UPSTREAM_CA")]
    pub upstream_ca: Option<PathBuf>,

    /// An upstream proxy to reach origins through: http://[user:password@]host:port (CONNECT),
    /// socks5://… or socks5h://… (the proxy resolves names), or the name of one of the config's
    /// `upstreams` (overrides upstream.proxy). Cache hits never go through it.
    #[arg(
        long,
        global = true,
        env = "ASSET_PROXY_UPSTREAM_PROXY",
        hide_env_values = true
    )]
    pub upstream_proxy: Option<String>,

    /// A Redis the proxies of a fleet share as a third cache tier: redis://[user:password@]host:port
    /// (several comma-separated nodes for a Redis Cluster; overrides shared.redis).
    #[arg(
        long,
        global = true,
        env = "ASSET_PROXY_SHARED_CACHE",
        hide_env_values = true
    )]
    pub shared_cache: Option<String>,

    /// Allow listening on a non-loopback --bind address. Requires proxy credentials
    /// (clients.proxy_auth in the config, or ASSET_PROXY_AUTH=user:password).
    #[arg(long, global = true)]
    pub allow_remote: bool,

    /// How this run uses the cache: `auto` (HTTP caching and the rules decide), `record`
    /// (store every GET answer the rules select, whatever no-store/no-cache/private say, never
    /// one that sets a cookie), `replay` (serve only from the cache, stale entries included,
    /// never contact an origin: a miss is a 504 naming the URL), `refresh` (record again:
    /// what was stored before this run is fetched again, once, and the new answers kept).
    #[arg(long, global = true, value_enum, default_value_t = RunMode::Auto, env = "ASSET_PROXY_MODE")]
    pub mode: RunMode,

    /// Ask every request that names no namespace for one (a 407 whose answer, the user name of
    /// the proxy URL, names it): browsers send proxy credentials only when asked. Sets
    /// clients.require_namespace.
    #[arg(long, global = true, env = "ASSET_PROXY_REQUIRE_NAMESPACE")]
    pub require_namespace: bool,

    /// Serve SOCKS5 clients on the proxy port too, told apart by their first byte (`off`: HTTP
    /// only). Sets clients.socks.
    #[arg(long, global = true, value_enum)]
    pub socks: Option<Switch>,

    /// The same as `--mode replay`.
    #[arg(long, global = true)]
    pub offline: bool,

    /// Port of the admin API (stats, metrics, purge, status page), on 127.0.0.1. Default: the
    /// proxy port + 1 (a free one when --port is 0).
    #[arg(long, global = true)]
    pub admin_port: Option<u16>,

    /// Bearer token the admin API requires (also ASSET_PROXY_ADMIN_TOKEN). Without one the
    /// admin API serves loopback clients only.
    #[arg(
        long,
        env = "ASSET_PROXY_ADMIN_TOKEN",
        global = true,
        hide_env_values = true
    )]
    pub admin_token: Option<String>,

    /// A file holding the admin API's bearer token (first line), so that it shows neither in
    /// `ps` nor in the environment. Overrides --admin-token.
    #[arg(long, global = true)]
    pub admin_token_file: Option<PathBuf>,

    /// Log level or filter (error, warn, info, debug, trace, or a RUST_LOG-style filter).
    /// RUST_LOG, when set, takes precedence.
    #[arg(long, default_value = "info", global = true)]
    pub log: String,

    /// Log format: one readable line per event, or one JSON object per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

impl Options {
    /// Where the admin API listens: always loopback.
    pub fn admin_addr(&self) -> SocketAddr {
        let port = self.admin_port.unwrap_or(if self.port == 0 {
            0
        } else {
            self.port.saturating_add(1)
        });
        SocketAddr::from(([127, 0, 0, 1], port))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// On or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

/// How a run uses the cache (`--mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RunMode {
    Auto,
    Record,
    Replay,
    Refresh,
}

impl Options {
    /// The run's mode: `--offline` is `replay`.
    pub fn mode(&self) -> asset_proxy::config::Mode {
        use asset_proxy::config::Mode;
        match (self.offline, self.mode) {
            (true, _) | (false, RunMode::Replay) => Mode::Replay,
            (false, RunMode::Auto) => Mode::Auto,
            (false, RunMode::Record) => Mode::Record,
            (false, RunMode::Refresh) => Mode::Refresh,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
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
pub enum CacheCommand {
    /// Figures of the running proxy, or what the cache directory holds.
    Stats {
        /// Only this namespace: its requests, entries and bytes (`default` for the default
        /// namespace).
        #[arg(long, value_parser = namespace_name)]
        namespace: Option<String>,
    },
    /// Entries, optionally only those whose URL starts with PREFIX.
    Ls {
        /// URL prefix.
        prefix: Option<String>,
        /// Only this namespace (`default` for the default one); every namespace when absent.
        #[arg(long, value_parser = namespace_name)]
        namespace: Option<String>,
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
        /// Only in this namespace (`default` for the default one); in every namespace when
        /// absent.
        #[arg(long, value_parser = namespace_name)]
        namespace: Option<String>,
    },
    /// Write the entries on --cache-dir (those whose URL starts with --prefix) as a HAR 1.2
    /// archive, for Playwright's routeFromHAR.
    Export {
        /// The archive to write.
        #[arg(long)]
        har: PathBuf,
        /// Only URLs starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Only this namespace (`default` for the default one); every namespace when absent,
        /// a URL held in several taken from the default one first.
        #[arg(long, value_parser = namespace_name)]
        namespace: Option<String>,
    },
    /// Store the answers of a HAR archive (Playwright's recordHar writes one) into --cache-dir
    /// as if fetched now, under the same rules. A damaged archive is refused whole, naming the
    /// entry and the reason.
    Import {
        /// The archive.
        file: PathBuf,
        /// Store into this namespace (`default`, the default, for the default one).
        #[arg(long, value_parser = namespace_name)]
        namespace: Option<String>,
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
pub enum CaCommand {
    /// Print where the CA certificate is.
    Path,
    /// Print the CA certificate (PEM), creating the CA if there is none.
    Export,
    /// Print the SHA-256 of the CA's public key (SubjectPublicKeyInfo), base64, creating the
    /// CA if there is none: Chromium trusts the proxy with
    /// `--ignore-certificate-errors-spki-list=<this>`, no certificate store needed.
    Spki,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a config file without starting; the exit code says whether it is valid.
    Check {
        /// The file.
        file: PathBuf,
    },
}

pub const DEFAULT_CONFIG: &str = "config/proxy.json";

/// A namespace name given on the command line, checked.
fn namespace_name(text: &str) -> Result<String, String> {
    asset_proxy::cache::http::namespace::check(text)?;
    Ok(text.to_owned())
}
