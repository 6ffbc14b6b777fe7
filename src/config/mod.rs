//! Configuration: the immutable `Config` each component receives a part of, as plain data the
//! parts read. The file format is `file`'s, its validation `validate`'s, the defaults
//! `defaults`', and the URLs a config names (upstream proxy, Redis nodes) `urls`'. Every key
//! has a default, so no file is needed.

use std::path::PathBuf;
use std::time::Duration;

use globset::GlobMatcher;
use regex::Regex;
use serde::Deserialize;

mod blocklist;
mod defaults;
mod file;
mod rules;
mod upstream;
mod urls;
mod validate;

pub use blocklist::Blocklist;
pub use defaults::*;
pub use upstream::{NamedProxy, UpstreamConfig};
pub use urls::{ProxyKind, ProxyUrl, RedisNode};

/// The name an upstream proxy given as a URL (`upstream.proxy`, `--upstream-proxy`) goes by.
pub const DEFAULT_PROXY_NAME: &str = "default";

/// A configuration file that could not be read or is not valid; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid JSON of the expected shape.
    #[error("config file {path}: {field}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key, as a dotted path (`memory.max_mb`, `rules[2].glob`).
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

/// The validated configuration. Immutable once the proxy starts.
#[derive(Debug, Clone)]
pub struct Config {
    /// Memory and disk tiers.
    pub cache: CacheConfig,
    /// Which requests may be cached.
    pub policy: PolicyConfig,
    /// Connections to origins.
    pub upstream: UpstreamConfig,
    /// CONNECT handling and the certificate authority.
    pub mitm: MitmConfig,
    /// The admin API.
    pub admin: AdminConfig,
    /// Client connections: limits, and who may use the proxy.
    pub clients: ClientsConfig,
    /// Fetching what documents and bootstrap scripts refer to before clients ask.
    pub prefetch: PrefetchConfig,
}

/// Predictive prefetch.
#[derive(Debug, Clone)]
pub struct PrefetchConfig {
    /// Whether documents and bootstrap scripts are scanned at all.
    pub enabled: bool,
    /// Also prefetch URLs that only standard HTTP caching would store (not just versioned
    /// and rule-named ones).
    pub all_cacheable: bool,
    /// Bytes of a body scanned at most.
    pub scan_bytes: usize,
    /// Prefetches under way at once, over all origins.
    pub concurrency: usize,
    /// Prefetches under way at once per origin.
    pub per_origin: usize,
    /// File names of the scripts scanned besides HTML documents (globs).
    pub scripts: globset::GlobSet,
}

/// Client connections.
#[derive(Debug, Clone)]
pub struct ClientsConfig {
    /// A client must send its request headers within this time (slowloris).
    pub header_timeout: Duration,
    /// A client must finish its TLS handshake inside a CONNECT tunnel within this time; it
    /// also bounds the wait for a tunnel's first bytes.
    pub tls_handshake_timeout: Duration,
    /// A WebSocket (or other upgraded connection) with no byte either way for this long is
    /// closed.
    pub websocket_idle: Duration,
    /// A client connection with no request in flight that moves no byte for this long is
    /// closed, whatever phase it is in.
    pub idle_timeout: Duration,
    /// `Proxy-Authorization: Basic` credentials every client must present; none when unset.
    pub credentials: Option<Credentials>,
    /// Whether a request that names no namespace is asked for one (a 407: browsers send the
    /// proxy URL's user name only when asked).
    pub require_namespace: bool,
    /// Whether SOCKS5 clients are served on the proxy port (told apart by their first byte).
    pub socks: bool,
    /// Threads serving clients, each with its own single-threaded runtime; 0 is one per core.
    pub threads: usize,
}

/// A user name and password for proxy authentication.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password, not even in debug output.
        write!(
            f,
            "Credentials {{ username: {:?}, password: <hidden> }}",
            self.username
        )
    }
}

impl Credentials {
    /// Parses `user:password`.
    pub fn parse(text: &str) -> Option<Credentials> {
        let (username, password) = text.split_once(':')?;
        (!username.is_empty() && !password.is_empty()).then(|| Credentials {
            username: username.to_owned(),
            password: password.to_owned(),
        })
    }
}

/// The admin API.
#[derive(Debug, Clone, Default)]
pub struct AdminConfig {
    /// Bearer token the data endpoints require; without one only loopback clients are served.
    pub token: Option<String>,
    /// Host names the admin API answers to besides its address, `localhost`, `127.0.0.1` and
    /// `[::1]`.
    pub hosts: Vec<String>,
}

/// Settings of the cache tiers.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Directory of the disk tier.
    pub dir: PathBuf,
    /// Capacity of the memory tier in body bytes.
    pub memory_max_bytes: u64,
    /// An entry unused this long leaves the memory tier.
    pub memory_idle: Duration,
    /// Fill the memory tier from disk with the most used entries at start.
    pub prewarm: bool,
    /// Capacity of the disk tier in entry-file bytes; least recently used entries go first.
    pub disk_max_bytes: u64,
    /// Store compressible bodies that arrived uncompressed zstd-compressed on disk.
    pub disk_compress: bool,
    /// Send cached bodies that arrived uncompressed in a coding the client accepts (zstd,
    /// br, gzip), made once per entry in the background.
    pub serve_compressed: bool,
    /// Entries older than this are fetched again.
    pub max_age: Duration,
    /// The most recently used versions of one asset always kept.
    pub keep_versions: usize,
    /// A version unused this long, after another version of its asset was used, retires.
    pub retire_after: Duration,
    /// Bodies larger than this are streamed but not stored.
    pub max_object_bytes: u64,
    /// How long a request waits for another's fetch of the same URL before fetching itself.
    pub coalesce_wait: Duration,
    /// The fleet's shared tier on Redis (off when it names no node).
    pub shared: SharedConfig,
}

/// The shared tier: a Redis (or Redis Cluster) that a fleet of proxies shares.
#[derive(Debug, Clone)]
pub struct SharedConfig {
    /// The nodes to connect to, tried in order; a cluster is discovered from any of them.
    /// None: no shared tier.
    pub nodes: Vec<RedisNode>,
    /// Prefix of every key and channel, so that several fleets can share one Redis.
    pub prefix: String,
    /// Limit for one Redis command on a request's path (a lookup, taking the fill lock).
    pub timeout: Duration,
    /// How long a fleet-wide fill lock outlives a holder that stopped renewing it.
    pub lock_ttl: Duration,
}

impl SharedConfig {
    /// Sets the nodes from comma-separated `redis://` URLs.
    pub fn set_nodes(&mut self, urls: &str) -> Result<(), String> {
        self.nodes = RedisNode::parse_list(urls)?;
        Ok(())
    }
}

/// What the proxy may cache.
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    /// Query parameters that carry a version (`main.dart.js?v=abc`).
    pub version_query_params: Vec<String>,
    /// File extensions of static assets whose URLs are checked for versions.
    pub asset_extensions: Vec<String>,
    /// Rules, first match wins.
    pub rules: Vec<Rule>,
    /// Store responses that HTTP caching rules make cacheable for a shared cache, whatever
    /// their URL.
    pub standard_caching: bool,
    /// How long a 404 or 410 for a versioned URL is served from the cache.
    pub negative_ttl: Duration,
    /// Versioned entries past their lifetime are served this long while refreshed.
    pub versioned_stale_while_revalidate: Duration,
    /// Versioned entries past their lifetime are served this long when the origin fails.
    pub versioned_stale_if_error: Duration,
    /// How this run uses the cache (`--mode`; `--offline` is `replay`).
    pub mode: Mode,
    /// Whether a client's own `Cache-Control`/`Pragma` (`no-cache`, `max-age=0`) make a fresh
    /// standard entry be revalidated (`client_reload: "revalidate"`); by default they do not.
    pub honour_client_reload: bool,
    /// Hosts (`blocklist_file`) every request and tunnel to is answered at once with the
    /// block status, contacting nothing.
    pub blocklist: Blocklist,
    /// Request headers removed from requests the cache may answer from or store into:
    /// origins trust them (`X-Forwarded-Host`...) but the cache does not key them, so an
    /// answer reflecting one would poison the entry for everyone.
    pub unkeyed_headers: Vec<http::HeaderName>,
}

/// How a run uses the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// HTTP caching and the rules decide (the default).
    #[default]
    Auto,
    /// Store every GET answer the rules select, whatever `no-store`, `no-cache` or `private`
    /// say (never one that sets a cookie): a run recorded once replays whole.
    Record,
    /// Serve only from the cache, stale entries included; never contact an origin.
    Replay,
    /// Record again: what was stored before the run began is fetched again (once), and the
    /// new answers are stored as `Record` stores them.
    Refresh,
}

impl PolicyConfig {
    /// Whether nothing may be fetched (`replay`).
    pub fn offline(&self) -> bool {
        self.mode == Mode::Replay
    }

    /// The config keys whose values differ in `other` (for the reload log).
    pub fn changed_keys(&self, other: &PolicyConfig) -> Vec<&'static str> {
        let differs =
            |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
        let mut changed = Vec::new();
        let pairs: [(&'static str, &dyn std::fmt::Debug, &dyn std::fmt::Debug); 8] = [
            ("rules", &self.rules, &other.rules),
            (
                "versioned.query_params",
                &self.version_query_params,
                &other.version_query_params,
            ),
            (
                "versioned.extensions",
                &self.asset_extensions,
                &other.asset_extensions,
            ),
            (
                "standard_caching",
                &self.standard_caching,
                &other.standard_caching,
            ),
            ("negative_ttl_secs", &self.negative_ttl, &other.negative_ttl),
            (
                "unkeyed_request_headers",
                &self.unkeyed_headers,
                &other.unkeyed_headers,
            ),
            (
                "versioned.stale_while_revalidate_secs",
                &self.versioned_stale_while_revalidate,
                &other.versioned_stale_while_revalidate,
            ),
            (
                "versioned.stale_if_error_secs",
                &self.versioned_stale_if_error,
                &other.versioned_stale_if_error,
            ),
        ];
        for (key, a, b) in pairs {
            if differs(a, b) {
                changed.push(key);
            }
        }
        changed
    }
}

/// One rule of the config: URLs it matches, and what to do with them.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Which URLs.
    pub pattern: Pattern,
    /// What to do with them, if the rule says.
    pub action: Option<RuleAction>,
    /// Overrides `standard_caching` for these URLs.
    pub standard_caching: Option<bool>,
    /// For `cache`: how long an entry is served before it is fetched again.
    pub ttl: Option<Duration>,
    /// `true`: share every answer to requests that carry `Cookie` or `Authorization`
    /// between clients; `false`: keep every answer to a cookie-carrying request for that
    /// cookie, static assets included. Unset: static assets are shared, other answers kept
    /// per cookie, and `Authorization` bypasses the cache.
    pub share_credentials: Option<bool>,
    /// Fetch these URLs directly, not through `upstream.proxy`.
    pub direct: bool,
    /// Recording (`--mode record`/`refresh`) stores answers to these URLs that set cookies
    /// too — without their `Set-Cookie`, which only the client that caused the fetch gets.
    pub record_cookies: bool,
    /// The named upstream (`upstreams`) these URLs are fetched through.
    pub upstream: Option<String>,
    /// For `block`: the status answered (403 by default; 204 answers with no body).
    pub block_status: u16,
}

/// A rule's URL pattern, matched against `host[:port]/path`.
#[derive(Debug, Clone)]
pub enum Pattern {
    /// A glob: `*` stays within a path segment, `**` crosses them.
    Glob(GlobMatcher),
    /// A regular expression, unanchored unless it anchors itself.
    Regex(Regex),
}

impl Pattern {
    /// Whether the pattern matches a `host[:port]/path` text.
    pub fn is_match(&self, text: &str) -> bool {
        match self {
            Pattern::Glob(glob) => glob.is_match(text),
            Pattern::Regex(regex) => regex.is_match(text),
        }
    }
}

/// What a rule does with the URLs it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    /// Cache responses to these URLs even when they carry no version.
    Cache,
    /// Never cache these URLs, even versioned ones.
    Bypass,
    /// Answer at once with the rule's `block_status`, contacting nothing.
    Block,
}

/// CONNECT handling.
#[derive(Debug, Clone)]
pub struct MitmConfig {
    /// Directory holding `ca.pem` and `ca-key.pem`.
    pub ca_dir: PathBuf,
    /// Hosts tunnelled without interception.
    pub passthrough: Vec<GlobMatcher>,
    /// `host:port` targets whose server speaks first (SMTP, FTP...): tunnelled at once,
    /// without waiting for the client's first bytes.
    pub server_speaks_first: Vec<GlobMatcher>,
}

impl MitmConfig {
    /// Whether CONNECTs to this host are tunnelled as they are.
    pub fn is_passthrough(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.passthrough.iter().any(|glob| glob.is_match(&host))
    }

    /// Whether the server of `host:port` speaks first, so the client sends nothing to wait for.
    pub fn server_speaks_first(&self, host: &str, port: u16) -> bool {
        let target = format!("{}:{port}", host.to_ascii_lowercase());
        self.server_speaks_first
            .iter()
            .any(|glob| glob.is_match(&target))
    }
}

#[cfg(test)]
mod tests;
