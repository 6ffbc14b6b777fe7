//! `cache export --har` and `cache import`: the cache directory's answers to and from HAR
//! archives.

use std::path::Path;
use std::sync::Arc;

use http::header::CONTENT_ENCODING;
use http::{HeaderValue, Request};

use crate::cache::http::namespace::NAMESPACE_HEADER;
use crate::cache::{CachedResponse, InNamespace};
use crate::config::Config;

use super::{open_directory, CommandError};

/// Writes the entries on the cache directory whose URL starts with `prefix`, in `namespace`
/// (every one when `None`), to `path` as a HAR archive; returns how many. One entry per URL
/// (an archive is replayed by URL, and its bodies are decoded): of a URL's variants, one in
/// the default namespace before one in another, one every client shares before one kept for
/// a client's cookie or credentials, one stored without a content coding before an encoded
/// one.
pub async fn export_har(
    config: &Config,
    prefix: &str,
    namespace: InNamespace,
    path: &Path,
) -> Result<usize, CommandError> {
    let cache = open_directory(config)?;
    let mut entries: Vec<Arc<CachedResponse>> = cache
        .read_entries(prefix)
        .await
        .into_iter()
        .filter(|entry| entry.meta.status == 200)
        .filter(|entry| {
            namespace
                .as_deref()
                .is_none_or(|name| entry.meta.key.in_namespace(name))
        })
        .collect();
    // The preferred variants first; then the first of each URL is kept.
    entries.sort_by_key(|entry| {
        let key = &entry.meta.key;
        (
            key.namespace().is_some(),
            key.is_per_client(),
            entry.meta.header_map().contains_key(CONTENT_ENCODING),
        )
    });
    let mut chosen: Vec<Arc<CachedResponse>> = Vec::new();
    for entry in entries {
        if !chosen
            .iter()
            .any(|c| c.meta.key.url() == entry.meta.key.url())
        {
            chosen.push(entry);
        }
    }
    chosen.sort_by(|a, b| a.meta.key.url().cmp(b.meta.key.url()));
    let har = crate::har::to_har(&chosen);
    let written = har["log"]["entries"].as_array().map_or(0, Vec::len);
    let text = serde_json::to_vec_pretty(&har).map_err(|e| CommandError::Usage(e.to_string()))?;
    crate::atomic_file::write(path, &text, 0o600)
        .map_err(|e| CommandError::Usage(format!("{}: {e}", path.display())))?;
    Ok(written)
}

/// What importing an archive did.
#[derive(Debug, Default)]
pub struct ImportReport {
    /// Answers stored.
    pub stored: usize,
    /// Answers not stored, with why (the same rules as a fetch).
    pub skipped: Vec<(String, &'static str)>,
}

/// Stores the answers of the HAR archive at `path` into the cache directory, in `namespace`
/// (the default one when `None`, whatever namespace header the archive's requests carry), as
/// if fetched now under the same rules. A damaged archive is refused whole before anything is
/// stored.
pub async fn import_har(
    config: &Config,
    path: &Path,
    namespace: Option<&str>,
) -> Result<ImportReport, CommandError> {
    let namespace = namespace
        .map(|name| {
            crate::cache::http::namespace::check(name)?;
            HeaderValue::from_str(name).map_err(|e| e.to_string())
        })
        .transpose()
        .map_err(CommandError::Usage)?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| CommandError::Usage(format!("{}: {e}", path.display())))?;
    let answers = crate::har::from_har(&text)
        .map_err(|e| CommandError::Usage(format!("{}: {e}; nothing imported", path.display())))?;
    let cache = open_directory(config)?;
    let mut report = ImportReport::default();
    for answer in answers {
        let mut request = Request::new(());
        *request.uri_mut() = match answer.url.as_str().parse() {
            Ok(uri) => uri,
            Err(_) => {
                report.skipped.push((answer.url.to_string(), "url"));
                continue;
            }
        };
        *request.method_mut() = match answer.method.parse() {
            Ok(method) => method,
            Err(_) => {
                report.skipped.push((answer.url.to_string(), "method"));
                continue;
            }
        };
        *request.headers_mut() = answer.request_headers;
        request.headers_mut().remove(NAMESPACE_HEADER);
        if let Some(name) = &namespace {
            request.headers_mut().insert(NAMESPACE_HEADER, name.clone());
        }
        let stored = cache
            .store_answer(
                request,
                answer.status,
                answer.headers,
                answer.body,
                &config.policy,
            )
            .await;
        match stored {
            Ok(()) => report.stored += 1,
            Err(reason) => report
                .skipped
                .push((answer.url.to_string(), reason.as_str())),
        }
    }
    cache.settled().await;
    Ok(report)
}
