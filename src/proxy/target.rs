//! The URL a request names: inside a tunnel, the tunnel's origin with the request's path and
//! query; otherwise the absolute-form target (RFC 9112 §3.2.2). Runs for every request, so
//! a host is parsed once per tunnel, and once per run of requests to one origin, rather than
//! once per request (host parsing was a tenth of a memory hit's instructions).

use std::cell::RefCell;

use http::Uri;
use url::Url;

use super::error::ProxyError;

/// The URL of a request inside a tunnel to `origin`: the same URL as parsing the two written
/// together gives.
pub(super) fn in_tunnel(
    origin: Result<&Url, &url::ParseError>,
    uri: &Uri,
) -> Result<Url, ProxyError> {
    let origin = origin.map_err(invalid)?;
    if !uri.path().starts_with('/') {
        return Err(invalid("a request inside a tunnel names a path"));
    }
    Ok(with_path_of(origin, uri))
}

/// The URL of an absolute-form request (`GET http://host/path`), `ws:` and `wss:` as `http:`
/// and `https:`.
pub(super) fn absolute(uri: &Uri) -> Result<Url, ProxyError> {
    let scheme =
        match uri.scheme_str() {
            // WebSocket URLs sent as absolute-form upgrade requests, as their HTTP twins.
            Some("http" | "ws") => "http",
            Some("https" | "wss") => "https",
            Some(other) => {
                return Err(ProxyError::BadRequest(format!(
                    "unsupported scheme {other:?}"
                )))
            }
            None => return Err(ProxyError::BadRequest(
                "this is a proxy: send an absolute URL (GET http://host/path) or CONNECT host:port"
                    .to_owned(),
            )),
        };
    let authority = uri.authority().map_or("", |a| a.as_str());
    let url = match same_origin_as_last(scheme, authority, uri) {
        Some(url) => url,
        None => {
            let path = uri.path_and_query().map_or("/", |p| p.as_str());
            let url = Url::parse(&format!("{scheme}://{authority}{path}")).map_err(invalid)?;
            remember_origin(scheme, authority, &url);
            url
        }
    };
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ProxyError::BadRequest("URL has no host".to_owned()));
    }
    Ok(url)
}

/// The origin of the last absolute-form request this thread parsed: scheme and authority as
/// the request wrote them, and the URL they make.
struct LastOrigin {
    scheme: &'static str,
    authority: String,
    url: Url,
}

thread_local! {
    static LAST_ORIGIN: RefCell<Option<LastOrigin>> = const { RefCell::new(None) };
}

/// The request's URL if its origin is the last one parsed on this thread.
fn same_origin_as_last(scheme: &str, authority: &str, uri: &Uri) -> Option<Url> {
    if !uri.path().starts_with('/') {
        return None;
    }
    LAST_ORIGIN.with_borrow(|last| match last {
        Some(last) if last.scheme == scheme && last.authority == authority => {
            Some(with_path_of(&last.url, uri))
        }
        _ => None,
    })
}

fn remember_origin(scheme: &'static str, authority: &str, url: &Url) {
    let mut origin = url.clone();
    origin.set_path("/");
    origin.set_query(None);
    origin.set_fragment(None);
    LAST_ORIGIN.set(Some(LastOrigin {
        scheme,
        authority: authority.to_owned(),
        url: origin,
    }));
}

/// `origin` with the path and query of `uri` (whose path starts with `/`): parsing them alone
/// gives what parsing the whole URL would.
fn with_path_of(origin: &Url, uri: &Uri) -> Url {
    let mut url = origin.clone();
    url.set_path(uri.path());
    url.set_query(uri.query());
    url
}

fn invalid(error: impl std::fmt::Display) -> ProxyError {
    ProxyError::BadRequest(format!("invalid URL: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGINS: [&str; 4] = [
        "https://example.com:8443",
        "http://127.0.0.1:80",
        "https://[::1]:443",
        "http://user:secret@example.com",
    ];

    const TARGETS: [&str; 13] = [
        "/",
        "/..",
        "/.%2e/x",
        "/a:b/c",
        "/?",
        "/app.js?v=1",
        "/a/../b/./c",
        "/%7Euser/%2e%2e/x",
        "/a%2Fb?x=1&y=%20z&z",
        "/search?",
        "//double//slashes",
        "/q?a=b?c=d/../e",
        "/%zz?%zz",
    ];

    #[test]
    fn a_tunnels_request_url_is_what_parsing_origin_and_target_together_gives() {
        for origin in ORIGINS {
            let parsed = Url::parse(origin).expect("origin");
            for target in TARGETS {
                let uri: Uri = target.parse().expect("target");
                let want = Url::parse(&format!("{origin}{target}")).expect("URL");
                let got = in_tunnel(Ok(&parsed), &uri).expect("URL");
                assert_eq!(got.as_str(), want.as_str(), "{origin} {target}");
            }
        }
    }

    #[test]
    fn an_absolute_url_is_the_same_whether_its_origin_was_parsed_before_or_not() {
        for origin in ORIGINS {
            for target in TARGETS {
                let text = format!("{origin}{target}");
                let uri: Uri = text.parse().expect("URI");
                let want = Url::parse(&text).expect("URL");
                // Another origin first, so that the first parse is a whole one.
                LAST_ORIGIN.set(None);
                let first = absolute(&uri).expect("first");
                assert!(
                    LAST_ORIGIN.with_borrow(Option::is_some),
                    "{text}: remembered"
                );
                let again = absolute(&uri).expect("again");
                assert_eq!(first.as_str(), want.as_str(), "{text}");
                assert_eq!(again.as_str(), want.as_str(), "{text}, origin known");
            }
        }
        // A request to another origin is not given the last one's host.
        let a = absolute(&"http://a.example/x".parse().expect("URI")).expect("a");
        let b = absolute(&"http://b.example/x".parse().expect("URI")).expect("b");
        assert_eq!(
            (a.as_str(), b.as_str()),
            ("http://a.example/x", "http://b.example/x")
        );
        let ws = absolute(&"wss://b.example/socket".parse().expect("URI")).expect("wss");
        assert_eq!(ws.as_str(), "https://b.example/socket");
    }
}
