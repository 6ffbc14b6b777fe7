//! Sending a cached body that arrived uncompressed in a coding the client accepts: zstd (the
//! frame the disk tier stores it as), br or gzip (made once per entry). A coding not made yet
//! is started in the background and the body goes out as it is meanwhile: a hit never waits
//! for a compressor. Ranges are answered from the body as it is.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, ETAG, RANGE, VARY};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};

use crate::body::{full, ProxyBody};
use crate::cache::compress::{self, Coding};
use crate::cache::{Cache, CachedResponse};

/// Preference among codings the client accepts: zstd is stored already and fastest to decode.
const PREFERENCE: [Coding; 3] = [Coding::Zstd, Coding::Br, Coding::Gzip];

/// Which coding to send `entry`'s body in for `request`, if any: `None` for the body as it is.
/// Starts making the client's preferred coding when it is missing.
pub(super) fn choose(
    cache: &Cache,
    entry: &Arc<CachedResponse>,
    request: &Request<()>,
) -> Option<(Coding, Bytes)> {
    if !applies(entry, request) {
        return None;
    }
    let accepted = compress::Accepted::of(request.headers());
    let mut wanted = PREFERENCE.into_iter().filter(|c| accepted.includes(*c));
    let first = wanted.next()?;
    if !entry.encodings.is_made(first) && entry.encodings.claim(first) {
        cache.make_coding(entry.clone(), first);
    }
    std::iter::once(first)
        .chain(wanted)
        .find_map(|coding| Some((coding, entry.encodings.get(coding)?.clone())))
}

/// Whether the entry's body may be sent in another coding for this request.
fn applies(entry: &CachedResponse, request: &Request<()>) -> bool {
    matches!(*request.method(), Method::GET | Method::HEAD)
        && !request.headers().contains_key(RANGE)
        && entry.meta.status() == StatusCode::OK
        && entry.meta.is_compressible()
}

/// Marks a response from a compressible entry as depending on `Accept-Encoding`, and, when a
/// coding was chosen, sends the body in it: its own length, and a weak ETag (the bytes
/// differ from the origin's, the content does not).
pub(super) fn apply(
    response: &mut Response<ProxyBody>,
    entry: &CachedResponse,
    request: &Request<()>,
    chosen: Option<(Coding, Bytes)>,
) {
    if !applies(entry, request) {
        return;
    }
    let status = response.status();
    let headers = response.headers_mut();
    add_vary_accept_encoding(headers);
    let Some((coding, body)) = chosen else { return };
    weaken_etag(headers);
    if status != StatusCode::OK {
        return;
    }
    headers.insert(CONTENT_ENCODING, HeaderValue::from_static(coding.as_str()));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    if request.method() == Method::GET {
        *response.body_mut() = full(body);
    }
}

fn add_vary_accept_encoding(headers: &mut HeaderMap) {
    let listed = headers
        .get_all(VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|name| {
            matches!(name.trim(), "*") || name.trim().eq_ignore_ascii_case("accept-encoding")
        });
    if !listed {
        headers.append(VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

fn weaken_etag(headers: &mut HeaderMap) {
    let Some(tag) = headers.get(ETAG).and_then(|v| v.to_str().ok()) else {
        return;
    };
    if tag.starts_with("W/") {
        return;
    }
    if let Ok(weak) = HeaderValue::from_str(&format!("W/{tag}")) {
        headers.insert(ETAG, weak);
    }
}
