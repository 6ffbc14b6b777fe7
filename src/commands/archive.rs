//! `cache export --har` and `cache import`: the cache directory's answers to and from HAR
//! archives.

use std::path::Path;
use std::sync::Arc;

use http::header::CONTENT_ENCODING;
use http::Request;

use crate::cache::CachedResponse;
use crate::config::Config;

use super::{open_directory, CommandError};

/// Writes the entries on the cache directory whose URL starts with `prefix` to `path` as a
/// HAR archive; returns how many. One entry per URL (an archive's bodies are decoded, so the
/// variants of a URL are one answer): a variant stored without a content coding if there is
/// one.
pub async fn export_har(config: &Config, prefix: &str, path: &Path) -> Result<usize, CommandError> {
    let cache = open_directory(config)?;
    let mut entries: Vec<Arc<CachedResponse>> = cache
        .read_entries(prefix)
        .await
        .into_iter()
        .filter(|entry| entry.meta.status == 200)
        .collect();
    // Unencoded variants first; then the first of each URL is kept.
    entries.sort_by_key(|entry| entry.meta.header_map().contains_key(CONTENT_ENCODING));
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
    crate::atomic_file::write(path, &text, 0o600)?;
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

/// Stores the answers of the HAR archive at `path` into the cache directory, as if fetched
/// now under the same rules. A damaged archive is refused whole before anything is stored.
pub async fn import_har(config: &Config, path: &Path) -> Result<ImportReport, CommandError> {
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
