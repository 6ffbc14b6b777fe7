//! The configuration file's format: every key as the JSON says it, before validation. Unknown
//! keys are errors.

use serde::Deserialize;

use super::RuleAction;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawConfig {
    pub(super) memory: RawMemory,
    pub(super) disk: RawDisk,
    pub(super) max_object_mb: Option<u64>,
    pub(super) keep_versions: Option<usize>,
    pub(super) standard_caching: Option<bool>,
    pub(super) client_reload: Option<ClientReload>,
    pub(super) unkeyed_request_headers: Option<Vec<String>>,
    pub(super) negative_ttl_secs: Option<u64>,
    pub(super) coalesce_wait_secs: Option<u64>,
    pub(super) serve_compressed: Option<bool>,
    pub(super) versioned: RawVersioned,
    pub(super) passthrough: Vec<String>,
    pub(super) upstreams: std::collections::BTreeMap<String, String>,
    pub(super) blocklist_file: Option<std::path::PathBuf>,
    pub(super) server_speaks_first: Option<Vec<String>>,
    pub(super) upstream: RawUpstream,
    pub(super) rules: Vec<RawRule>,
    pub(super) clients: RawClients,
    pub(super) admin: RawAdmin,
    pub(super) shared: RawShared,
    pub(super) prefetch: RawPrefetch,
}

/// What a client's own reload directives do to fresh standard entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum ClientReload {
    /// Nothing: the entry is served while fresh.
    Ignore,
    /// It is revalidated first (RFC 9111 §5.2.1.4).
    Revalidate,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawPrefetch {
    pub(super) enabled: Option<bool>,
    pub(super) all_cacheable: Option<bool>,
    pub(super) scan_kb: Option<u64>,
    pub(super) concurrency: Option<u64>,
    pub(super) per_origin: Option<u64>,
    pub(super) scripts: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAdmin {
    pub(super) hosts: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawShared {
    pub(super) redis: Option<String>,
    pub(super) prefix: Option<String>,
    pub(super) timeout_ms: Option<u64>,
    pub(super) lock_ttl_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawClients {
    pub(super) header_timeout_secs: Option<u64>,
    pub(super) tls_handshake_timeout_secs: Option<u64>,
    pub(super) websocket_idle_secs: Option<u64>,
    pub(super) idle_timeout_secs: Option<u64>,
    pub(super) proxy_auth: Option<RawCredentials>,
    pub(super) require_namespace: Option<bool>,
    pub(super) socks: Option<bool>,
    pub(super) threads: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCredentials {
    pub(super) username: String,
    pub(super) password: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawMemory {
    pub(super) max_mb: Option<u64>,
    pub(super) idle_secs: Option<u64>,
    pub(super) prewarm: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawDisk {
    pub(super) max_age_hours: Option<u64>,
    pub(super) max_mb: Option<u64>,
    pub(super) compress: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawVersioned {
    pub(super) query_params: Option<Vec<String>>,
    pub(super) extensions: Option<Vec<String>>,
    pub(super) stale_while_revalidate_secs: Option<u64>,
    pub(super) stale_if_error_secs: Option<u64>,
    pub(super) retire_after_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawUpstream {
    pub(super) connect_timeout_secs: Option<u64>,
    pub(super) response_timeout_secs: Option<u64>,
    pub(super) body_timeout_secs: Option<u64>,
    pub(super) idle_timeout_secs: Option<u64>,
    pub(super) allow_hosts: Vec<String>,
    pub(super) proxy: Option<String>,
    pub(super) no_proxy: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    pub(super) glob: Option<String>,
    pub(super) regex: Option<String>,
    pub(super) action: Option<RuleAction>,
    pub(super) ttl_secs: Option<u64>,
    pub(super) share_credentials: Option<bool>,
    #[serde(default)]
    pub(super) direct: bool,
    pub(super) standard_caching: Option<bool>,
    #[serde(default)]
    pub(super) record_cookies: bool,
    pub(super) upstream: Option<String>,
    pub(super) block_status: Option<u16>,
}
