//! The operator commands of the `proxy` binary besides running it: `cache stats | ls | purge`
//! (through a running proxy's admin API when one answers, else directly on the cache
//! directory), `cache verify`, `cache export --har` and `cache import` (always on the
//! directory), and `warm` (fetch a list of URLs into the cache through a running proxy, or
//! through one started for the purpose).

mod archive;
mod warm;

pub use archive::{export_har, import_har, ImportReport};
pub use warm::{read_urls, warm, warm_through, WarmReport, Warmed};

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::admin::client::AdminClient;
use crate::app::StartError;
use crate::cache::disk::verify::verify_dir;
use crate::cache::Cache;
use crate::cache::Purge;
use crate::config::Config;
use crate::stats::Stats;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The running proxy's admin API refused or failed.
    #[error("{0}")]
    Admin(String),
    /// The cache directory or the CA could not be opened.
    #[error(transparent)]
    Start(#[from] StartError),
    /// Reading input or writing output failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Something the user asked for is wrong.
    #[error("{0}")]
    Usage(String),
}

/// Verifies the cache in `dir`, printing each problem and a summary; `true` when nothing
/// was wrong.
pub async fn verify(dir: &std::path::Path, repair: bool) -> Result<bool, CommandError> {
    let dir = dir.to_owned();
    let report = tokio::task::spawn_blocking(move || verify_dir(&dir, repair))
        .await
        .map_err(|e| CommandError::Io(std::io::Error::other(e)))?
        .map_err(StartError::from)?;
    for finding in &report.findings {
        let repaired = if finding.repaired { " (repaired)" } else { "" };
        println!(
            "bad  {}  {}{repaired}",
            finding.path.display(),
            finding.problem
        );
    }
    let repaired = report.findings.iter().filter(|f| f.repaired).count();
    println!(
        "checked {} entries ({} bytes): {} problems, {} repaired",
        report.entries_checked,
        report.bytes_checked,
        report.findings.len(),
        repaired
    );
    Ok(report.clean())
}

/// Where the cache commands act.
pub enum CacheTarget {
    /// A running proxy, through its admin API.
    Running(AdminClient),
    /// The cache directory itself (no proxy answers).
    Directory(Cache),
}

impl CacheTarget {
    /// The admin API at `admin` when a proxy answers there, else the directory `config` names.
    pub async fn find(
        admin: SocketAddr,
        token: Option<String>,
        config: &Config,
    ) -> Result<CacheTarget, CommandError> {
        if let Some(client) = AdminClient::connect(admin, token).await {
            return Ok(CacheTarget::Running(client));
        }
        // A command reads and removes; filling a memory tier it will not serve from is waste.
        let mut cache_config = config.cache.clone();
        cache_config.prewarm = false;
        let cache =
            Cache::open(&cache_config, Arc::new(Stats::default())).map_err(StartError::from)?;
        // No proxy keeps the index current: make it agree with the files before answering.
        let checking = cache.clone();
        let _ = tokio::task::spawn_blocking(move || checking.reconcile_now()).await;
        Ok(CacheTarget::Directory(cache))
    }

    /// Stats of the running proxy, or what the directory holds; of one namespace when named.
    pub async fn stats(&self, namespace: Option<&str>) -> Result<Value, CommandError> {
        match (self, namespace) {
            (CacheTarget::Running(client), None) => {
                client.get("/stats").await.map_err(CommandError::Admin)
            }
            (CacheTarget::Running(client), Some(name)) => client
                .get(&format!("/stats?{}", query(&[("namespace", name)])))
                .await
                .map_err(CommandError::Admin),
            (CacheTarget::Directory(cache), None) => {
                let assets = cache.assets().await.len();
                Ok(json!({ "tiers": cache.usage().await, "assets": assets, "running": false }))
            }
            (CacheTarget::Directory(cache), Some(name)) => {
                let usage = cache.namespace_usage(name).await;
                Ok(json!({
                    "namespace": name,
                    "entries": usage.entries,
                    "body_bytes": usage.body_bytes,
                    "running": false,
                }))
            }
        }
    }

    /// Entries in `namespace` (every one when `None`) whose URL starts with `prefix`.
    pub async fn entries(
        &self,
        prefix: &str,
        namespace: Option<&str>,
    ) -> Result<Value, CommandError> {
        match self {
            CacheTarget::Running(client) => {
                let mut pairs = vec![("prefix", prefix)];
                pairs.extend(namespace.map(|name| ("namespace", name)));
                client
                    .get(&format!("/entries?{}", query(&pairs)))
                    .await
                    .map_err(CommandError::Admin)
            }
            CacheTarget::Directory(cache) => {
                let namespace = namespace.map(str::to_owned);
                Ok(json!({ "entries": cache.entries(prefix, namespace, usize::MAX).await }))
            }
        }
    }

    /// Removes what `what` names in `namespace` (every one when `None`); reports what went
    /// from each tier. `body` is the same selection as the admin API's `/purge` takes.
    pub async fn purge(
        &self,
        what: &Purge,
        namespace: Option<&str>,
        body: Value,
    ) -> Result<Value, CommandError> {
        match self {
            CacheTarget::Running(client) => client
                .post("/purge", &body)
                .await
                .map_err(CommandError::Admin),
            CacheTarget::Directory(cache) => {
                let namespace = namespace.map(str::to_owned);
                let report = cache.purge(what.clone(), namespace).await;
                Ok(serde_json::to_value(report).unwrap_or_default())
            }
        }
    }
}

/// A URL query of `pairs`, encoded.
fn query(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// Opens the cache directory `config` names for a command (no pre-warming).
pub(super) fn open_directory(config: &Config) -> Result<Cache, CommandError> {
    let mut cache_config = config.cache.clone();
    cache_config.prewarm = false;
    Ok(Cache::open(&cache_config, Arc::new(Stats::default())).map_err(StartError::from)?)
}
