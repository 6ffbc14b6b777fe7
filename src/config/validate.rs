//! Validation: the file's format turned into `Config`, every key checked once, each error
//! naming its key (`memory.max_mb`, `rules[2].glob`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::{Glob, GlobMatcher};

use super::file::*;
use super::*;

const MIB: u64 = 1024 * 1024;

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
        Config::parse_in(&text, path.parent()).map_err(|(field, message)| ConfigError::Invalid {
            path: path.to_owned(),
            field,
            message,
        })
    }

    /// Parses and validates config text; an error is `(field, message)`. Relative paths in it
    /// are relative to the working directory.
    pub fn parse(text: &str) -> Result<Config, (String, String)> {
        Config::parse_in(text, None)
    }

    /// Parses and validates the text of a config file in `dir`, which its relative paths
    /// (`blocklist_file`) are relative to: a file and the list beside it go together wherever
    /// the proxy is started from.
    fn parse_in(text: &str, dir: Option<&Path>) -> Result<Config, (String, String)> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let raw: RawConfig = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
            let field = match e.path().to_string() {
                path if path.is_empty() || path == "." || path == "?" => "(top level)".to_owned(),
                path => path,
            };
            (field, e.into_inner().to_string())
        })?;
        // Whatever follows the document (a second object, a stray brace) is an error: it
        // would otherwise be dropped without a word.
        deserializer
            .end()
            .map_err(|e| ("(top level)".to_owned(), e.to_string()))?;
        let mut raw = raw;
        if let (Some(dir), Some(list)) = (dir, raw.blocklist_file.as_mut()) {
            if list.is_relative() {
                *list = dir.join(&*list);
            }
        }
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
                .map(|(index, rule)| rule.validate(index, &raw.upstreams))
                .collect::<Result<_, _>>()?,
            blocklist: match &raw.blocklist_file {
                None => Blocklist::default(),
                Some(path) => {
                    let text = std::fs::read_to_string(path).map_err(|e| {
                        (
                            "blocklist_file".to_owned(),
                            format!("{}: {e}", path.display()),
                        )
                    })?;
                    Blocklist::parse(&text).map_err(|e| {
                        (
                            "blocklist_file".to_owned(),
                            format!("{}: {e}", path.display()),
                        )
                    })?
                }
            },
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
            mode: Mode::Auto,
            honour_client_reload: raw.client_reload == Some(ClientReload::Revalidate),
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
            body_timeout: secs(
                "upstream.body_timeout_secs",
                raw.upstream.body_timeout_secs.unwrap_or(60),
            )?,
            idle_timeout: secs(
                "upstream.idle_timeout_secs",
                raw.upstream.idle_timeout_secs.unwrap_or(90),
            )?,
            allow_hosts: host_globs("upstream.allow_hosts", &raw.upstream.allow_hosts)?,
            proxies: raw
                .upstreams
                .iter()
                .map(|(name, url)| {
                    let field = format!("upstreams.{name}");
                    if name.is_empty() || name == DEFAULT_PROXY_NAME {
                        return Err((
                            field,
                            format!("name it anything but {DEFAULT_PROXY_NAME:?} or nothing"),
                        ));
                    }
                    let url = ProxyUrl::parse(url).map_err(|e| (field, e))?;
                    Ok(NamedProxy {
                        name: name.clone(),
                        url,
                    })
                })
                .collect::<Result<_, _>>()?,
            default_proxy: None,
            no_proxy: host_globs("upstream.no_proxy", &raw.upstream.no_proxy)?,
        };
        let mut upstream = upstream;
        if let Some(text) = raw.upstream.proxy.as_deref() {
            upstream
                .set_default_proxy(text)
                .map_err(|e| ("upstream.proxy".to_owned(), e))?;
        }
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
            require_namespace: raw.clients.require_namespace.unwrap_or(false),
            socks: raw.clients.socks.unwrap_or(true),
            threads: raw.clients.threads.unwrap_or(0),
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
        scripts: glob_set("prefetch.scripts", &scripts)?,
    })
}

/// Globs matched together: one pass, with fast paths for literal names and extensions.
fn glob_set(field: &str, globs: &[String]) -> Result<globset::GlobSet, (String, String)> {
    let mut set = globset::GlobSetBuilder::new();
    for (index, text) in globs.iter().enumerate() {
        let glob = globset::GlobBuilder::new(text)
            .case_insensitive(true)
            .build()
            .map_err(|e| (format!("{field}[{index}]"), e.to_string()))?;
        set.add(glob);
    }
    set.build().map_err(|e| (field.to_owned(), e.to_string()))
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

pub(super) fn secs(field: &str, value: u64) -> Result<Duration, (String, String)> {
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
