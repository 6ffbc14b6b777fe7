//! What the cache holds, for operators: usage per tier, entries by URL prefix, assets with
//! their versions, and purging by URL, prefix, host, asset or everything — in every namespace,
//! or in one. Reads metadata only, never bodies. The disk walks are blocking and run on the
//! blocking pool.

use std::sync::Arc;

use http::HeaderMap;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::cache::disk::digest_of_path;
use crate::cache::disk::journal::Removal;
use crate::cache::entry::{CachedResponse, EntryMeta};
use crate::cache::http::key::CacheKey;
use crate::cache::http::namespace::DEFAULT_NAMESPACE;
use crate::cache::tiers::Tiers;
use crate::cache::version_index::AssetSummary;

/// What to purge.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Purge {
    /// One URL (every variant of it).
    Url(String),
    /// Every URL starting with this.
    Prefix(String),
    /// Every URL on this host.
    Host(String),
    /// Every version of this asset identity (or an unversioned URL).
    Asset(String),
    /// Everything (`{"all": true}`).
    All(bool),
}

/// Which namespaces an inventory looks at: `None` every one, else the one named (`default`
/// for the default namespace).
pub type InNamespace = Option<String>;

fn within(meta: &EntryMeta, namespace: &InNamespace) -> bool {
    namespace
        .as_deref()
        .is_none_or(|name| meta.key.in_namespace(name))
}

impl Purge {
    fn matches(&self, meta: &EntryMeta) -> bool {
        let url = meta.key.url();
        match self {
            Purge::Url(wanted) => Url::parse(wanted).is_ok_and(|wanted| wanted.as_str() == url),
            Purge::Prefix(prefix) => url.starts_with(prefix.as_str()),
            Purge::Host(host) => Url::parse(url).is_ok_and(|u| host_matches(&u, host)),
            Purge::Asset(asset) => meta
                .asset
                .as_ref()
                .map_or(url == asset, |a| a.as_str() == asset),
            Purge::All(all) => *all,
        }
    }
}

/// Whether `url` is on `host`: a name (every port), or `name:port` (that port only; a
/// scheme's default port counts as written).
fn host_matches(url: &Url, host: &str) -> bool {
    let unbracketed = |name: &str| {
        name.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned()
    };
    let Some(name) = url.host_str().map(unbracketed) else {
        return false;
    };
    if name.eq_ignore_ascii_case(&unbracketed(host)) {
        return true;
    }
    let port = url.port_or_known_default().unwrap_or(0);
    host.rsplit_once(':').is_some_and(|(wanted, wanted_port)| {
        name.eq_ignore_ascii_case(&unbracketed(wanted)) && wanted_port.parse() == Ok(port)
    })
}

/// What a purge removed from each tier.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PurgeReport {
    /// Entries dropped from memory.
    pub memory: usize,
    /// Entry files removed from disk.
    pub disk: usize,
}

/// Entries and bytes held by each tier.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Usage {
    /// Entries in memory.
    pub memory_entries: u64,
    /// Bytes in memory, as the tier's bound counts them (bodies, codings, bookkeeping).
    pub memory_bytes: u64,
    /// Of those, the bodies as received.
    pub memory_body_bytes: u64,
    /// Of those, the codings made of the bodies (stored zstd frames, br and gzip).
    pub memory_coding_bytes: u64,
    /// Entry files on disk.
    pub disk_entries: u64,
    /// Bytes of entry files on disk.
    pub disk_bytes: u64,
    /// The disk tier's cap (`disk.max_mb`).
    pub disk_max_bytes: u64,
    /// Entries waiting for the disk writer.
    pub write_queue_entries: u64,
    /// Bytes waiting for the disk writer.
    pub write_queue_bytes: u64,
    /// Bytes of entries waiting for room in the disk writer's queue.
    pub write_waiting_bytes: u64,
    /// Whether the last disk operation failed (read-only, full, deleted...).
    pub disk_failing: bool,
}

/// What one namespace holds on disk.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct NamespaceUsage {
    /// Entries.
    pub entries: u64,
    /// Their bodies' bytes.
    pub body_bytes: u64,
}

/// One entry, as listed.
#[derive(Debug, Clone, Serialize)]
pub struct EntrySummary {
    /// The URL.
    pub url: String,
    /// The key, with its variant.
    pub key: String,
    /// The namespace (`default` for the default one).
    pub namespace: String,
    /// Response status.
    pub status: u16,
    /// Body bytes.
    pub body_bytes: u64,
    /// When stored or last revalidated, in seconds since the Unix epoch.
    pub stored_at: u64,
    /// Asset identity, for versioned URLs.
    pub asset: Option<String>,
    /// Version, for versioned URLs.
    pub version: Option<String>,
}

impl Tiers {
    /// Entries and bytes per tier, the disk's from its index.
    pub async fn usage(&self) -> Usage {
        let (memory_entries, memory_bytes) = self.memory.usage();
        let parts = self.memory.parts();
        let (disk_entries, disk_bytes) = self.store.index.usage();
        let (write_queue_entries, write_queue_bytes, write_waiting_bytes) = self.writer.depth();
        Usage {
            memory_entries,
            memory_bytes,
            memory_body_bytes: parts.body_bytes,
            memory_coding_bytes: parts.coding_bytes,
            disk_entries,
            disk_bytes,
            disk_max_bytes: self.config.disk_max_bytes,
            write_queue_entries: write_queue_entries as u64,
            write_queue_bytes,
            write_waiting_bytes,
            disk_failing: self.store.health.is_failing(),
        }
    }

    /// Every entry on disk whose URL starts with `prefix`, read whole and checked, sorted by
    /// key.
    pub async fn read_entries(&self, prefix: &str) -> Vec<Arc<CachedResponse>> {
        let (store, prefix) = (self.store.clone(), prefix.to_owned());
        tokio::task::spawn_blocking(move || {
            let disk = &store.tier;
            let mut out: Vec<Arc<CachedResponse>> = disk
                .entry_paths()
                .iter()
                .filter_map(|path| digest_of_path(path))
                .filter_map(|digest| disk.read_digest(&digest).ok().flatten())
                .filter(|entry| entry.meta.key.url().starts_with(&prefix))
                .map(Arc::new)
                .collect();
            out.sort_by_key(|entry| entry.meta.key.to_string());
            out
        })
        .await
        .unwrap_or_default()
    }

    /// Entries on disk in `namespace` whose URL starts with `prefix`, sorted by URL, at most
    /// `limit`.
    pub async fn entries(
        &self,
        prefix: &str,
        namespace: InNamespace,
        limit: usize,
    ) -> Vec<EntrySummary> {
        let (store, prefix) = (self.store.clone(), prefix.to_owned());
        tokio::task::spawn_blocking(move || {
            let disk = &store.tier;
            let mut out: Vec<EntrySummary> = disk
                .entry_paths()
                .iter()
                .filter_map(|path| disk.read_meta(path).ok())
                .filter(|(meta, _)| meta.key.url().starts_with(&prefix))
                .filter(|(meta, _)| within(meta, &namespace))
                .map(|(meta, _)| EntrySummary {
                    url: meta.key.url().to_owned(),
                    key: meta.key.to_string(),
                    namespace: meta.key.namespace().unwrap_or(DEFAULT_NAMESPACE).to_owned(),
                    status: meta.status,
                    body_bytes: meta.body_len,
                    stored_at: meta.stored_at_ms / 1000,
                    asset: meta.asset.as_ref().map(|a| a.to_string()),
                    version: meta.version.as_ref().map(|v| v.to_string()),
                })
                .collect();
            out.sort_by(|a, b| a.url.cmp(&b.url).then_with(|| a.key.cmp(&b.key)));
            out.truncate(limit);
            out
        })
        .await
        .unwrap_or_default()
    }

    /// Entries and body bytes on disk in the namespace `name` (`default` for the default one).
    pub async fn namespace_usage(&self, name: &str) -> NamespaceUsage {
        let entries = self.entries("", Some(name.to_owned()), usize::MAX).await;
        NamespaceUsage {
            entries: entries.len() as u64,
            body_bytes: entries.iter().map(|e| e.body_bytes).sum(),
        }
    }

    /// Every asset in the version index, with the bytes each held version takes on disk.
    pub async fn assets(&self) -> Vec<AssetSummary> {
        let (index, store) = (self.versions.clone(), self.store.clone());
        tokio::task::spawn_blocking(move || {
            let disk = &store.tier;
            let mut assets = index.list();
            for asset in &mut assets {
                for held in &mut asset.versions {
                    held.bytes = held
                        .keys
                        .iter()
                        .filter_map(|key| std::fs::metadata(disk.path_of(key)).ok())
                        .map(|m| m.len())
                        .sum();
                }
            }
            assets
        })
        .await
        .unwrap_or_default()
    }

    /// Invalidates what a request for `url` with `headers` would be answered from, after an
    /// unsafe request to `url` succeeded (RFC 9111 §4.4): removed from memory, disk and the
    /// shared tier, as a purge of those keys; until the disk and the shared tier have let go,
    /// lookups pass over what was stored before (`Invalidated`).
    ///
    /// Most unsafe requests (an API's POSTs) are to URLs the cache holds nothing for: then
    /// nothing is written, and only a fleet's shared tier is asked to forget the keys.
    pub(crate) async fn invalidate(self: &Arc<Self>, url: &Url, headers: &HeaderMap) {
        let now = crate::cache::entry::now_ms();
        let keys = super::lookup::keys_answering(self, url, headers).await;
        // An entry in memory may still be queued for the disk: its removal is queued after it.
        let held: Vec<CacheKey> = keys
            .iter()
            .filter(|key| self.memory.remove(key) || self.store.holds(key))
            .cloned()
            .collect();
        if self.shared.is_none() && held.is_empty() {
            return;
        }
        self.invalidated.note(url.as_str(), now);
        if let Some(shared) = &self.shared {
            shared.remove(&keys);
        }
        if !held.is_empty() {
            self.writer.remove(held, Removal::Purge, self.pending());
        }
    }

    /// Removes what `what` names in `namespace` from both tiers.
    pub async fn purge(&self, what: Purge, namespace: InNamespace) -> PurgeReport {
        let (what, namespace) = (Arc::new(what), Arc::new(namespace));
        let memory = {
            let (what, namespace) = (what.clone(), namespace.clone());
            self.memory.remove_matching(move |entry| {
                what.matches(&entry.meta) && within(&entry.meta, &namespace)
            })
        };
        let (store, index) = (self.store.clone(), self.versions.clone());
        let removed = tokio::task::spawn_blocking(move || {
            let disk = &store.tier;
            let mut removed = Vec::new();
            for path in disk.entry_paths() {
                let Ok((meta, _)) = disk.read_meta(&path) else {
                    continue;
                };
                let selected = what.matches(&meta) && within(&meta, &namespace);
                if selected && disk.remove_path(&path).is_ok() {
                    removed.push(meta.key.digest_bytes());
                    // The version index is shared by every namespace: only a purge of all of
                    // them forgets an asset's versions.
                    if let (Some(asset), Purge::Asset(_) | Purge::All(true), None) =
                        (&meta.asset, what.as_ref(), namespace.as_ref())
                    {
                        let _ = index.forget(asset);
                    }
                }
            }
            // Recorded, so other processes drop their memory copies too.
            store.remove(&removed, Removal::Purge);
            removed.len()
        })
        .await
        .unwrap_or_default();
        PurgeReport {
            memory,
            disk: removed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::host_matches;
    use url::Url;

    #[test]
    fn a_host_purge_names_every_port_or_one() {
        let cases = [
            ("https://a.test/x.js", "a.test", true),
            ("https://a.test:8443/x.js", "a.test", true),
            ("https://a.test:8443/x.js", "a.test:8443", true),
            ("https://a.test/x.js", "a.test:443", true),
            ("https://a.test/x.js", "a.test:8443", false),
            ("http://127.0.0.1:18443/x.js", "127.0.0.1:18443", true),
            ("http://[::1]:8080/x.js", "[::1]:8080", true),
            ("http://[::1]:8080/x.js", "[::1]:9090", false),
            ("https://b.test/x.js", "a.test", false),
        ];
        for (url, host, expected) in cases {
            let url = Url::parse(url).expect("url");
            assert_eq!(host_matches(&url, host), expected, "{url} {host}");
        }
    }
}
