//! HAR 1.2 (the HTTP Archive format browsers and Playwright read and write), for moving cached
//! answers in and out: `to_har` writes entries as an archive Playwright's `routeFromHAR`
//! serves; `from_har` reads an archive (one `recordHar` wrote, say) into answers to store.
//! Pure: no file and no cache here. An archive is read whole and checked before anything is
//! taken from it, so a damaged one is refused with the entry and the reason.

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use url::Url;

use crate::cache::{compress, CachedResponse};

/// Headers that describe how a body travelled, not what it is: an archive's bodies are
/// decoded, so these would mislabel them.
const TRANSPORT_HEADERS: [&str; 7] = [
    "content-encoding",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "trailer",
    "upgrade",
];

/// Why an archive was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{reason}", .entry.map(|n| format!("entry {n}: ")).unwrap_or_default())]
pub struct HarError {
    /// The entry (from 0), when one is at fault.
    pub entry: Option<usize>,
    /// What is wrong.
    pub reason: String,
}

/// One answer read from an archive.
#[derive(Debug, Clone)]
pub struct HarAnswer {
    /// The request's URL.
    pub url: Url,
    /// The request's method.
    pub method: String,
    /// The request's headers (they pick the cache key's variant).
    pub request_headers: HeaderMap,
    /// The response status.
    pub status: StatusCode,
    /// The response headers, without those of the transport.
    pub headers: HeaderMap,
    /// The response body, decoded.
    pub body: Bytes,
}

#[derive(Deserialize)]
struct Archive {
    log: Log,
}

#[derive(Deserialize)]
struct Log {
    entries: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    request: RequestPart,
    response: ResponsePart,
}

#[derive(Deserialize)]
struct RequestPart {
    method: String,
    url: String,
    #[serde(default)]
    headers: Vec<Header>,
}

#[derive(Deserialize)]
struct ResponsePart {
    status: u16,
    #[serde(default)]
    headers: Vec<Header>,
    content: Content,
}

#[derive(Deserialize, Serialize)]
struct Header {
    name: String,
    value: String,
}

#[derive(Deserialize)]
struct Content {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    encoding: Option<String>,
}

/// Reads every answer of an archive, or refuses it whole.
pub fn from_har(text: &str) -> Result<Vec<HarAnswer>, HarError> {
    let archive: Archive = serde_json::from_str(text).map_err(|e| HarError {
        entry: None,
        reason: format!("not a HAR archive: {e}"),
    })?;
    archive
        .log
        .entries
        .into_iter()
        .enumerate()
        .map(|(n, entry)| {
            answer(entry).map_err(|reason| HarError {
                entry: Some(n),
                reason,
            })
        })
        .collect()
}

fn answer(entry: Entry) -> Result<HarAnswer, String> {
    let url = Url::parse(&entry.request.url)
        .map_err(|e| format!("request.url {:?}: {e}", entry.request.url))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("request.url {url}: not http or https"));
    }
    let status = StatusCode::from_u16(entry.response.status).map_err(|_| {
        format!(
            "response.status {} is not an HTTP status",
            entry.response.status
        )
    })?;
    let body = match (entry.response.content.text, entry.response.content.encoding) {
        (None, _) => Bytes::new(),
        (Some(text), Some(encoding)) if encoding.eq_ignore_ascii_case("base64") => {
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map(Bytes::from)
                .map_err(|e| format!("response.content.text is not valid base64: {e}"))?
        }
        (Some(_), Some(encoding)) => {
            return Err(format!(
                "response.content.encoding {encoding:?} is not base64"
            ))
        }
        (Some(text), None) => Bytes::from(text),
    };
    let mut headers = header_map(&entry.response.headers, "response.headers")?;
    for name in TRANSPORT_HEADERS {
        headers.remove(name);
    }
    Ok(HarAnswer {
        url,
        method: entry.request.method,
        request_headers: header_map(&entry.request.headers, "request.headers")?,
        status,
        headers,
        body,
    })
}

fn header_map(headers: &[Header], field: &str) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for header in headers {
        // HTTP/2 pseudo-headers (":authority"...) are not headers of the message.
        if header.name.starts_with(':') {
            continue;
        }
        let name = HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|_| format!("{field}: {:?} is not a header name", header.name))?;
        let value = HeaderValue::from_str(&header.value).map_err(|_| {
            format!(
                "{field}: the value of {:?} is not a header value",
                header.name
            )
        })?;
        map.append(name, value);
    }
    Ok(map)
}

/// An archive of `entries` (each a GET answered from the cache), bodies decoded from their
/// content coding, as text when they are UTF-8 and base64 otherwise. An entry whose body does
/// not decode is left out.
pub fn to_har(entries: &[std::sync::Arc<CachedResponse>]) -> Value {
    let entries: Vec<Value> = entries
        .iter()
        .filter_map(|entry| har_entry(entry))
        .collect();
    json!({
        "log": {
            "version": "1.2",
            "creator": {"name": "asset-proxy", "version": env!("CARGO_PKG_VERSION")},
            "pages": [],
            "entries": entries,
        }
    })
}

fn har_entry(entry: &CachedResponse) -> Option<Value> {
    let meta = &entry.meta;
    let coding = meta
        .header_map()
        .get(http::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity");
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut compress::decoder(coding, entry.body()?)?, &mut body).ok()?;
    let headers: Vec<Header> = meta
        .headers
        .iter()
        .filter(|(name, _)| !TRANSPORT_HEADERS.contains(&name.to_ascii_lowercase().as_str()))
        .map(|(name, value)| Header {
            name: name.clone(),
            value: value.clone(),
        })
        .collect();
    let mime = meta
        .header_map()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    let content = match std::str::from_utf8(&body) {
        Ok(text) => json!({"size": body.len(), "mimeType": mime, "text": text}),
        Err(_) => json!({
            "size": body.len(),
            "mimeType": mime,
            "text": base64::engine::general_purpose::STANDARD.encode(&body),
            "encoding": "base64",
        }),
    };
    let at = time::OffsetDateTime::from(meta.stored_at());
    let started = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    );
    Some(json!({
        "startedDateTime": started,
        "time": 0,
        "request": {
            "method": "GET",
            "url": meta.key.url(),
            "httpVersion": "HTTP/1.1",
            "cookies": [],
            "headers": [],
            "queryString": [],
            "headersSize": -1,
            "bodySize": 0,
        },
        "response": {
            "status": meta.status,
            "statusText": meta.status().canonical_reason().unwrap_or(""),
            "httpVersion": "HTTP/1.1",
            "cookies": [],
            "headers": headers,
            "content": content,
            "redirectURL": "",
            "headersSize": -1,
            "bodySize": body.len(),
        },
        "cache": {},
        "timings": {"send": 0, "wait": 0, "receive": 0},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(entries: &str) -> String {
        format!(r#"{{"log": {{"version": "1.2", "entries": [{entries}]}}}}"#)
    }

    const GOOD: &str = r#"{"request": {"method": "GET", "url": "https://app.test/main.js?v=1",
        "headers": [{"name": ":authority", "value": "app.test"}, {"name": "Accept-Encoding", "value": "gzip, br"}]},
        "response": {"status": 200, "headers": [{"name": "Content-Type", "value": "text/javascript"},
        {"name": "Content-Encoding", "value": "br"}, {"name": "Content-Length", "value": "3"}],
        "content": {"size": 9, "text": "run(1);\n"}}}"#;

    #[test]
    fn answers_are_read_decoded_and_without_transport_headers() {
        let binary = r#"{"request": {"method": "GET", "url": "https://app.test/a.wasm"},
            "response": {"status": 200, "headers": [], "content": {"text": "AGFzbQ==", "encoding": "base64"}}}"#;
        let answers = from_har(&archive(&format!("{GOOD}, {binary}"))).expect("valid");
        assert_eq!(answers.len(), 2);
        assert_eq!(answers[0].body, "run(1);\n");
        assert_eq!(
            answers[0].headers.get("content-type").expect("type"),
            "text/javascript"
        );
        assert!(answers[0].headers.get("content-encoding").is_none());
        assert_eq!(
            answers[0]
                .request_headers
                .get("accept-encoding")
                .expect("accept-encoding"),
            "gzip, br"
        );
        assert_eq!(&answers[1].body[..], b"\0asm");
    }

    #[test]
    fn a_damaged_archive_is_refused_naming_the_entry_and_the_reason() {
        let cases = [
            ("{\"log\": ", None, "not a HAR archive"),
            (
                &*archive(&format!(
                    r#"{GOOD}, {{"request": {{"method": "GET", "url": "not a url"}}, "response": {{"status": 200, "content": {{}}}}}}"#
                )),
                Some(1),
                "request.url",
            ),
            (
                &*archive(
                    r#"{"request": {"method": "GET", "url": "https://a.test/"}, "response": {"status": 200, "content": {"text": "%%%", "encoding": "base64"}}}"#,
                ),
                Some(0),
                "base64",
            ),
            (
                &*archive(
                    r#"{"request": {"method": "GET", "url": "https://a.test/"}, "response": {"status": 1000, "content": {}}}"#,
                ),
                Some(0),
                "status",
            ),
            (
                &*archive(
                    r#"{"request": {"method": "GET", "url": "https://a.test/"}, "response": {"status": 200, "headers": [{"name": "bad name", "value": "x"}], "content": {}}}"#,
                ),
                Some(0),
                "header name",
            ),
        ];
        for (text, entry, reason) in cases {
            let error = from_har(text).expect_err(reason);
            assert_eq!(error.entry, entry, "{error}");
            assert!(error.to_string().contains(reason), "{error}");
        }
    }
}
