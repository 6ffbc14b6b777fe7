//! Configuration: the JSON file format (`RawConfig`), its validation, and the immutable
//! `Config` each component receives a part of. Every key has a default, so no file is needed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cache::shared::link::RedisNode;
use crate::proxy::chain::ChainProxy;
use globset::{Glob, GlobBuilder, GlobMatcher};
use regex::Regex;
use serde::Deserialize;

const MIB: u64 = 1024 * 1024;

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
    pub scripts: Vec<GlobMatcher>,
}

/// Bootstrap scripts scanned when the config names none.
pub const DEFAULT_PREFETCH_SCRIPTS: &[&str] = &[
    "flutter.js",
    "flutter_bootstrap.js",
    "*bootstrap*.js",
    "*loader*.js",
];

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

/// Key and channel prefix of the shared tier when the config names none.
pub const DEFAULT_SHARED_PREFIX: &str = "asset-proxy:";

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
    /// Serve only from the cache; never contact an origin.
    pub offline: bool,
    /// Request headers removed from requests the cache may answer from or store into:
    /// origins trust them (`X-Forwarded-Host`...) but the cache does not key them, so an
    /// answer reflecting one would poison the entry for everyone.
    pub unkeyed_headers: Vec<http::HeaderName>,
}

impl PolicyConfig {
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
}

/// Connections to origins.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Extra PEM roots trusted for origin TLS, on top of the standard web roots.
    pub extra_roots: Option<PathBuf>,
    /// Limit for opening a TCP connection.
    pub connect_timeout: Duration,
    /// Limit for an origin's response headers to arrive.
    pub response_timeout: Duration,
    /// Pooled connections unused this long are closed.
    pub idle_timeout: Duration,
    /// Hosts the proxy may contact; empty means any.
    pub allow_hosts: Vec<GlobMatcher>,
    /// The HTTP proxy origin connections go through (`CONNECT`); none: direct.
    pub proxy: Option<ChainProxy>,
    /// Hosts reached directly even with `proxy` set.
    pub no_proxy: Vec<GlobMatcher>,
}

impl UpstreamConfig {
    /// Whether connections to `host` go through `proxy` (set, and `host` not in `no_proxy`).
    pub fn chains(&self, host: &str) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        self.proxy.is_some() && !self.no_proxy.iter().any(|glob| glob.is_match(&host))
    }

    /// Refuses a host outside `allow_hosts`, before any DNS lookup or connection.
    pub fn check_allowed(&self, host: &str) -> Result<(), crate::error::ProxyError> {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        if self.allow_hosts.is_empty() || self.allow_hosts.iter().any(|glob| glob.is_match(&host)) {
            return Ok(());
        }
        Err(crate::error::ProxyError::HostNotAllowed { host })
    }
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    memory: RawMemory,
    disk: RawDisk,
    max_object_mb: Option<u64>,
    keep_versions: Option<usize>,
    standard_caching: Option<bool>,
    unkeyed_request_headers: Option<Vec<String>>,
    negative_ttl_secs: Option<u64>,
    coalesce_wait_secs: Option<u64>,
    serve_compressed: Option<bool>,
    versioned: RawVersioned,
    passthrough: Vec<String>,
    server_speaks_first: Option<Vec<String>>,
    upstream: RawUpstream,
    rules: Vec<RawRule>,
    clients: RawClients,
    admin: RawAdmin,
    shared: RawShared,
    prefetch: RawPrefetch,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawPrefetch {
    enabled: Option<bool>,
    all_cacheable: Option<bool>,
    scan_kb: Option<u64>,
    concurrency: Option<u64>,
    per_origin: Option<u64>,
    scripts: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAdmin {
    hosts: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawShared {
    redis: Option<String>,
    prefix: Option<String>,
    timeout_ms: Option<u64>,
    lock_ttl_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawClients {
    header_timeout_secs: Option<u64>,
    tls_handshake_timeout_secs: Option<u64>,
    websocket_idle_secs: Option<u64>,
    idle_timeout_secs: Option<u64>,
    proxy_auth: Option<RawCredentials>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCredentials {
    username: String,
    password: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawMemory {
    max_mb: Option<u64>,
    idle_secs: Option<u64>,
    prewarm: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDisk {
    max_age_hours: Option<u64>,
    max_mb: Option<u64>,
    compress: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawVersioned {
    query_params: Option<Vec<String>>,
    extensions: Option<Vec<String>>,
    stale_while_revalidate_secs: Option<u64>,
    stale_if_error_secs: Option<u64>,
    retire_after_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawUpstream {
    connect_timeout_secs: Option<u64>,
    response_timeout_secs: Option<u64>,
    idle_timeout_secs: Option<u64>,
    allow_hosts: Vec<String>,
    proxy: Option<String>,
    no_proxy: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    glob: Option<String>,
    regex: Option<String>,
    action: Option<RuleAction>,
    ttl_secs: Option<u64>,
    share_credentials: Option<bool>,
    #[serde(default)]
    direct: bool,
    standard_caching: Option<bool>,
}

/// Query parameters that carry a version when the config names none.
pub const DEFAULT_VERSION_PARAMS: &[&str] = &["v", "ver", "version", "hash", "build"];

/// Request headers origins commonly trust to build URLs (and reflect into bodies) that the
/// cache does not key, when the config names none.
pub const DEFAULT_UNKEYED_HEADERS: &[&str] = &[
    "x-forwarded-host",
    "x-forwarded-scheme",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-server",
    "x-original-url",
    "x-rewrite-url",
    "x-host",
    "x-http-method-override",
    "forwarded",
];

/// `host:port` globs of protocols whose server speaks first (FTP, SMTP, POP3, IMAP,
/// submission, MySQL), tunnelled without waiting for the client when the config names none.
pub const DEFAULT_SERVER_SPEAKS_FIRST: &[&str] =
    &["*:21", "*:25", "*:110", "*:143", "*:587", "*:3306"];

/// Extensions of static assets when the config names none.
pub const DEFAULT_ASSET_EXTENSIONS: &[&str] = &[
    "js", "mjs", "cjs", "css", "wasm", "map", "woff", "woff2", "ttf", "otf", "eot", "png", "jpg",
    "jpeg", "gif", "webp", "avif", "svg", "ico", "bmp", "mp3", "mp4", "webm", "ogg", "wav",
];

impl Default for Config {
    fn default() -> Self {
        // The empty document is valid by construction, so this cannot fail.
        match Config::from_raw(RawConfig::default()) {
            Ok(config) => config,
            Err((field, message)) => unreachable!("built-in defaults invalid: {field}: {message}"),
        }
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text).map_err(|(field, message)| ConfigError::Invalid {
            path: path.to_owned(),
            field,
            message,
        })
    }

    /// Parses and validates config text; an error is `(field, message)`.
    pub fn parse(text: &str) -> Result<Config, (String, String)> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let raw: RawConfig = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
            let field = match e.path().to_string() {
                path if path.is_empty() || path == "." || path == "?" => "(top level)".to_owned(),
                path => path,
            };
            (field, e.into_inner().to_string())
        })?;
        Config::from_raw(raw)
    }

    fn from_raw(raw: RawConfig) -> Result<Config, (String, String)> {
        let cache = CacheConfig {
            dir: PathBuf::from("cache"),
            memory_max_bytes: positive("memory.max_mb", raw.memory.max_mb.unwrap_or(256))? * MIB,
            memory_idle: secs("memory.idle_secs", raw.memory.idle_secs.unwrap_or(300))?,
            prewarm: raw.memory.prewarm.unwrap_or(true),
            disk_max_bytes: positive("disk.max_mb", raw.disk.max_mb.unwrap_or(10_240))? * MIB,
            disk_compress: raw.disk.compress.unwrap_or(true),
            serve_compressed: raw.serve_compressed.unwrap_or(true),
            max_age: secs(
                "disk.max_age_hours",
                raw.disk.max_age_hours.unwrap_or(24).saturating_mul(3600),
            )?,
            keep_versions: positive("keep_versions", raw.keep_versions.unwrap_or(1) as u64)?
                as usize,
            retire_after: Duration::from_secs(raw.versioned.retire_after_secs.unwrap_or(300)),
            max_object_bytes: positive("max_object_mb", raw.max_object_mb.unwrap_or(64))? * MIB,
            coalesce_wait: secs("coalesce_wait_secs", raw.coalesce_wait_secs.unwrap_or(30))?,
            shared: shared_config(raw.shared)?,
        };
        let policy = PolicyConfig {
            version_query_params: word_list(
                "versioned.query_params",
                raw.versioned.query_params,
                DEFAULT_VERSION_PARAMS,
            )?,
            asset_extensions: word_list(
                "versioned.extensions",
                raw.versioned.extensions,
                DEFAULT_ASSET_EXTENSIONS,
            )?
            .into_iter()
            .map(|ext| ext.trim_start_matches('.').to_ascii_lowercase())
            .collect(),
            rules: raw
                .rules
                .into_iter()
                .enumerate()
                .map(|(index, rule)| rule.validate(index))
                .collect::<Result<_, _>>()?,
            standard_caching: raw.standard_caching.unwrap_or(true),
            negative_ttl: secs("negative_ttl_secs", raw.negative_ttl_secs.unwrap_or(60))?,
            versioned_stale_while_revalidate: Duration::from_secs(
                raw.versioned
                    .stale_while_revalidate_secs
                    .unwrap_or(24 * 3600),
            ),
            versioned_stale_if_error: Duration::from_secs(
                raw.versioned.stale_if_error_secs.unwrap_or(7 * 24 * 3600),
            ),
            offline: false,
            unkeyed_headers: header_names(
                "unkeyed_request_headers",
                raw.unkeyed_request_headers,
                DEFAULT_UNKEYED_HEADERS,
            )?,
        };
        let upstream = UpstreamConfig {
            extra_roots: None,
            connect_timeout: secs(
                "upstream.connect_timeout_secs",
                raw.upstream.connect_timeout_secs.unwrap_or(10),
            )?,
            response_timeout: secs(
                "upstream.response_timeout_secs",
                raw.upstream.response_timeout_secs.unwrap_or(60),
            )?,
            idle_timeout: secs(
                "upstream.idle_timeout_secs",
                raw.upstream.idle_timeout_secs.unwrap_or(90),
            )?,
            allow_hosts: host_globs("upstream.allow_hosts", &raw.upstream.allow_hosts)?,
            proxy: raw
                .upstream
                .proxy
                .as_deref()
                .map(ChainProxy::parse)
                .transpose()
                .map_err(|e| ("upstream.proxy".to_owned(), e))?,
            no_proxy: host_globs("upstream.no_proxy", &raw.upstream.no_proxy)?,
        };
        let passthrough = host_globs("passthrough", &raw.passthrough)?;
        let server_speaks_first = raw.server_speaks_first.unwrap_or_else(|| {
            DEFAULT_SERVER_SPEAKS_FIRST
                .iter()
                .map(|s| (*s).to_owned())
                .collect()
        });
        let mitm = MitmConfig {
            ca_dir: PathBuf::from("certs"),
            passthrough,
            server_speaks_first: host_globs("server_speaks_first", &server_speaks_first)?,
        };
        let credentials = match raw.clients.proxy_auth {
            None => None,
            Some(raw)
                if raw.username.is_empty()
                    || raw.username.contains(':')
                    || raw.password.is_empty() =>
            {
                return Err((
                    "clients.proxy_auth".to_owned(),
                    "username (without ':') and password must not be empty".to_owned(),
                ))
            }
            Some(raw) => Some(Credentials {
                username: raw.username,
                password: raw.password,
            }),
        };
        let clients = ClientsConfig {
            header_timeout: secs(
                "clients.header_timeout_secs",
                raw.clients.header_timeout_secs.unwrap_or(30),
            )?,
            tls_handshake_timeout: secs(
                "clients.tls_handshake_timeout_secs",
                raw.clients.tls_handshake_timeout_secs.unwrap_or(10),
            )?,
            websocket_idle: secs(
                "clients.websocket_idle_secs",
                raw.clients.websocket_idle_secs.unwrap_or(600),
            )?,
            idle_timeout: secs(
                "clients.idle_timeout_secs",
                raw.clients.idle_timeout_secs.unwrap_or(60),
            )?,
            credentials,
        };
        let prefetch = prefetch_config(raw.prefetch)?;
        Ok(Config {
            cache,
            policy,
            upstream,
            mitm,
            admin: AdminConfig {
                token: None,
                hosts: word_list("admin.hosts", Some(raw.admin.hosts), &[])?,
            },
            clients,
            prefetch,
        })
    }
}

impl RawRule {
    fn validate(self, index: usize) -> Result<Rule, (String, String)> {
        let field = |name: &str| format!("rules[{index}].{name}");
        let pattern = match (self.glob, self.regex) {
            (Some(glob), None) => GlobBuilder::new(&glob)
                .literal_separator(true)
                .build()
                .map(|glob| Pattern::Glob(glob.compile_matcher()))
                .map_err(|e| (field("glob"), e.to_string()))?,
            (None, Some(regex)) => Regex::new(&regex)
                .map(Pattern::Regex)
                .map_err(|e| (field("regex"), e.to_string()))?,
            _ => {
                return Err((
                    format!("rules[{index}]"),
                    "a rule needs exactly one of `glob` and `regex`".to_owned(),
                ))
            }
        };
        let ttl = self
            .ttl_secs
            .map(|ttl| secs(&field("ttl_secs"), ttl))
            .transpose()?;
        if self.action.is_none()
            && self.standard_caching.is_none()
            && self.share_credentials.is_none()
            && !self.direct
        {
            return Err((
                format!("rules[{index}]"),
                "a rule needs `action`, `standard_caching`, `share_credentials` or `direct`"
                    .to_owned(),
            ));
        }
        if self.action == Some(RuleAction::Bypass) && self.share_credentials.is_some() {
            return Err((
                field("share_credentials"),
                "a bypass rule caches nothing to share".to_owned(),
            ));
        }
        if self.action != Some(RuleAction::Cache) && ttl.is_some() {
            return Err((
                field("ttl_secs"),
                "only a rule with \"action\": \"cache\" takes this".to_owned(),
            ));
        }
        Ok(Rule {
            pattern,
            action: self.action,
            standard_caching: self.standard_caching,
            ttl,
            share_credentials: self.share_credentials,
            direct: self.direct,
        })
    }
}

fn host_globs(field: &str, hosts: &[String]) -> Result<Vec<GlobMatcher>, (String, String)> {
    hosts
        .iter()
        .enumerate()
        .map(|(index, host)| {
            Glob::new(&host.to_ascii_lowercase())
                .map(|glob| glob.compile_matcher())
                .map_err(|e| (format!("{field}[{index}]"), e.to_string()))
        })
        .collect()
}

fn prefetch_config(raw: RawPrefetch) -> Result<PrefetchConfig, (String, String)> {
    let scripts = match raw.scripts {
        Some(scripts) => scripts,
        None => DEFAULT_PREFETCH_SCRIPTS
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
    };
    let count = |field: &str, value: u64| {
        positive(field, value).map(|n| usize::try_from(n).unwrap_or(usize::MAX))
    };
    Ok(PrefetchConfig {
        enabled: raw.enabled.unwrap_or(true),
        all_cacheable: raw.all_cacheable.unwrap_or(false),
        scan_bytes: count("prefetch.scan_kb", raw.scan_kb.unwrap_or(512))?.saturating_mul(1024),
        concurrency: count("prefetch.concurrency", raw.concurrency.unwrap_or(4))?,
        per_origin: count("prefetch.per_origin", raw.per_origin.unwrap_or(2))?,
        scripts: host_globs("prefetch.scripts", &scripts)?,
    })
}

fn shared_config(raw: RawShared) -> Result<SharedConfig, (String, String)> {
    let mut shared = SharedConfig {
        nodes: Vec::new(),
        prefix: raw
            .prefix
            .unwrap_or_else(|| DEFAULT_SHARED_PREFIX.to_owned()),
        timeout: Duration::from_millis(positive(
            "shared.timeout_ms",
            raw.timeout_ms.unwrap_or(500),
        )?),
        lock_ttl: secs("shared.lock_ttl_secs", raw.lock_ttl_secs.unwrap_or(10))?,
    };
    if let Some(urls) = raw.redis.filter(|urls| !urls.trim().is_empty()) {
        shared
            .set_nodes(&urls)
            .map_err(|e| ("shared.redis".to_owned(), e))?;
    }
    Ok(shared)
}

fn positive(field: &str, value: u64) -> Result<u64, (String, String)> {
    if value == 0 {
        return Err((field.to_owned(), "must be greater than 0".to_owned()));
    }
    Ok(value)
}

fn secs(field: &str, value: u64) -> Result<Duration, (String, String)> {
    positive(field, value).map(Duration::from_secs)
}

fn header_names(
    field: &str,
    given: Option<Vec<String>>,
    default: &[&str],
) -> Result<Vec<http::HeaderName>, (String, String)> {
    word_list(field, given, default)?
        .iter()
        .enumerate()
        .map(|(index, name)| {
            http::HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|e| (format!("{field}[{index}]"), e.to_string()))
        })
        .collect()
}

fn word_list(
    field: &str,
    given: Option<Vec<String>>,
    default: &[&str],
) -> Result<Vec<String>, (String, String)> {
    let words = given.unwrap_or_else(|| default.iter().map(|w| (*w).to_owned()).collect());
    if let Some(index) = words.iter().position(|w| w.trim().is_empty()) {
        return Err((format!("{field}[{index}]"), "must not be empty".to_owned()));
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_document_gives_defaults() {
        let config = Config::parse("{}").expect("valid");
        assert_eq!(config.cache.memory_max_bytes, 256 * MIB);
        assert_eq!(config.cache.keep_versions, 1);
        assert_eq!(config.cache.max_age, Duration::from_secs(24 * 3600));
        assert_eq!(config.policy.version_query_params.len(), 5);
    }

    #[test]
    fn shipped_example_config_is_valid() {
        let config = Config::parse(include_str!("../config/proxy.json")).expect("valid");
        let defaults = Config::default();
        assert_eq!(
            config.cache.memory_max_bytes,
            defaults.cache.memory_max_bytes
        );
        assert_eq!(
            config.policy.version_query_params,
            defaults.policy.version_query_params
        );
        assert_eq!(
            config.policy.asset_extensions,
            defaults.policy.asset_extensions
        );
        assert_eq!(config.policy.rules.len(), 1);
        assert_eq!(config.policy.negative_ttl, defaults.policy.negative_ttl);
        assert_eq!(
            config.policy.versioned_stale_if_error,
            defaults.policy.versioned_stale_if_error
        );
        assert_eq!(
            config.policy.versioned_stale_while_revalidate,
            defaults.policy.versioned_stale_while_revalidate
        );
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (r#"{"memory": {"max_mb": "big"}}"#, "memory.max_mb"),
            (r#"{"memory": {"max_mb": 0}}"#, "memory.max_mb"),
            (r#"{"memory": {"maxmb": 1}}"#, "memory.maxmb"),
            (r#"{"colour": 1}"#, "colour"),
            (r#"{"": 1}"#, "(top level)"),
            ("{\"\"action\":\"cach{\n  s\"}],\"m", "(top level)"),
            (r#"{"rules": [{"action": "cache"}]}"#, "rules[0]"),
            (r#"{"rules": [{"glob": "a/**"}]}"#, "rules[0]"),
            (
                r#"{"rules": [{"glob": "a/**", "action": "bypass", "ttl_secs": 5}]}"#,
                "rules[0].ttl_secs",
            ),
            (r#"{"negative_ttl_secs": 0}"#, "negative_ttl_secs"),
            (r#"{"standard_caching": "yes"}"#, "standard_caching"),
            (
                r#"{"rules": [{"glob": "a/**", "action": "cache"}, {"regex": "(", "action": "bypass"}]}"#,
                "rules[1].regex",
            ),
            (
                r#"{"rules": [{"glob": "a", "action": "keep"}]}"#,
                "rules[0].action",
            ),
            (
                r#"{"versioned": {"query_params": ["v", ""]}}"#,
                "versioned.query_params[1]",
            ),
            (r#"{"passthrough": ["[bad"]}"#, "passthrough[0]"),
            (r#"{"shared": {"redis": "http://h:1"}}"#, "shared.redis"),
            (r#"{"shared": {"redis": "redis://"}}"#, "shared.redis"),
            (r#"{"shared": {"timeout_ms": 0}}"#, "shared.timeout_ms"),
            (
                r#"{"shared": {"lock_ttl_secs": 0}}"#,
                "shared.lock_ttl_secs",
            ),
        ];
        for (text, want) in cases {
            let (field, message) = Config::parse(text).expect_err(text);
            assert_eq!(field, want, "{text}: {message}");
        }
    }

    #[test]
    fn rule_globs_keep_star_within_a_segment() {
        let config = Config::parse(
            r#"{"rules": [{"glob": "cdn.example.com/*.js", "action": "cache", "ttl_secs": 60}]}"#,
        )
        .expect("valid");
        let rule = &config.policy.rules[0];
        assert!(rule.pattern.is_match("cdn.example.com/app.js"));
        assert!(!rule.pattern.is_match("cdn.example.com/deep/app.js"));
        assert_eq!(rule.ttl, Some(Duration::from_secs(60)));
    }

    #[test]
    fn allow_hosts_limits_upstream_hosts() {
        let open = Config::default();
        assert!(open.upstream.check_allowed("example.com").is_ok());
        let config =
            Config::parse(r#"{"upstream": {"allow_hosts": ["localhost", "127.*", "::1"]}}"#)
                .expect("valid");
        for host in ["localhost", "LOCALHOST", "127.0.0.1", "[::1]"] {
            assert!(config.upstream.check_allowed(host).is_ok(), "{host}");
        }
        for host in ["example.com", "localhost.evil.test", "clients2.google.com"] {
            assert!(config.upstream.check_allowed(host).is_err(), "{host}");
        }
    }

    #[test]
    fn passthrough_matches_hosts_case_insensitively() {
        let config = Config::parse(r#"{"passthrough": ["*.Bank.example"]}"#).expect("valid");
        assert!(config.mitm.is_passthrough("www.bank.EXAMPLE"));
        assert!(!config.mitm.is_passthrough("bank.example.org"));
    }
}
