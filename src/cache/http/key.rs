//! `CacheKey`: the normalised URL plus the content-coding variant the client can take. Pure.
//!
//! The key always carries the client's coding class (`br,gzip` or `identity`...), so a body
//! stored gzip for a browser is never served to a client that cannot decode it. The class is a
//! sorted set of known codings, so the many spellings of Accept-Encoding collapse to a few keys.
//! Other headers a response varies on (its `Vary`) add their request values to the key, and
//! a request's namespace (see `namespace`) puts it in a key space of its own.

use std::fmt;

use http::header::COOKIE;
use http::HeaderMap;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::cache::compress::Accepted;

/// Request headers whose values are credentials: only their digests enter a key.
const SECRET_HEADERS: [&str; 3] = ["cookie", "authorization", "proxy-authorization"];

/// The coding class of a client that accepts no content coding.
const UNCODED: &str = "identity";

/// What identifies a stored response: URL and coding class.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CacheKey {
    url: String,
    codings: String,
    /// `name: value` lines of the other headers the response varies on; empty when none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    varied: String,
    /// The namespace; empty for the default one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    namespace: String,
}

impl CacheKey {
    /// The key of a GET (or HEAD) for `url` with these request headers.
    pub fn new(url: &Url, headers: &HeaderMap) -> CacheKey {
        CacheKey::with_vary(url, headers, &[])
    }

    /// The key for a response that varies on `vary` (lower-case names, Accept-Encoding
    /// excluded: it is always part of the key).
    pub fn with_vary(url: &Url, headers: &HeaderMap, vary: &[String]) -> CacheKey {
        CacheKey::for_request(url, headers, vary, true)
    }

    /// The key of a request: its URL, coding class and the values of `vary`. Unless
    /// `shared`, a request that carries a cookie gets an entry of its own, keyed by the
    /// cookie, so no other client is ever served it. Credentials enter the key only as
    /// digests: keys are written to disk and to logs.
    pub fn for_request(url: &Url, headers: &HeaderMap, vary: &[String], shared: bool) -> CacheKey {
        // The URL's text without its fragment: a slice of it, no second URL.
        let url = &url[..url::Position::AfterQuery];
        let mut varied = String::new();
        let per_user =
            !shared && headers.contains_key(COOKIE) && !vary.iter().any(|n| n == "cookie");
        let names = vary
            .iter()
            .map(String::as_str)
            .chain(per_user.then_some("cookie"));
        for name in names {
            let values: Vec<&str> = headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(str::trim)
                .collect();
            let value = values.join(", ");
            varied.push_str(name);
            varied.push_str(": ");
            if SECRET_HEADERS.contains(&name) {
                varied.push_str(&secret_digest(&value));
            } else {
                varied.push_str(&value);
            }
            varied.push('\n');
        }
        CacheKey {
            url: url.to_owned(),
            codings: coding_class(headers),
            varied,
            namespace: super::namespace::settled(headers)
                .unwrap_or_default()
                .to_owned(),
        }
    }

    /// This key for a client that accepts no content coding: where a body the origin sent
    /// without one is kept, because it answers every client (the proxy compresses it for
    /// those that accept a coding). `None` when this is that key already.
    pub fn for_uncoded_body(&self) -> Option<CacheKey> {
        (self.codings != UNCODED).then(|| CacheKey {
            codings: UNCODED.to_owned(),
            ..self.clone()
        })
    }

    /// The namespace, `None` for the default one.
    pub fn namespace(&self) -> Option<&str> {
        (!self.namespace.is_empty()).then_some(self.namespace.as_str())
    }

    /// Whether the key is in the namespace named `name` (`default` for the default one).
    pub fn in_namespace(&self, name: &str) -> bool {
        self.namespace()
            .unwrap_or(super::namespace::DEFAULT_NAMESPACE)
            == name
    }

    /// Whether the entry is one client's own: keyed by a cookie or credential it sent.
    pub fn is_per_client(&self) -> bool {
        self.varied.lines().any(|line| {
            line.split_once(':')
                .is_some_and(|(name, _)| SECRET_HEADERS.contains(&name))
        })
    }

    /// The normalised URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Bytes of text the key holds.
    pub fn text_len(&self) -> u64 {
        (self.url.len() + self.codings.len() + self.varied.len() + self.namespace.len()) as u64
    }

    /// A stable hex digest of the key, used for file names: no request text reaches a path.
    pub fn digest(&self) -> String {
        hex(&self.digest_bytes())
    }

    /// The digest as raw bytes (the disk index's name for the entry).
    pub fn digest_bytes(&self) -> [u8; 32] {
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        context.update(self.url.as_bytes());
        context.update(b"\n");
        context.update(self.codings.as_bytes());
        context.update(b"\n");
        context.update(self.varied.as_bytes());
        // Only named namespaces add to the digest: default keys stay what they always were.
        if !self.namespace.is_empty() {
            context.update(b"\nnamespace: ");
            context.update(self.namespace.as_bytes());
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(context.finish().as_ref());
        out
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}]", self.url, self.codings)?;
        if !self.varied.is_empty() {
            write!(f, " [{}]", self.varied.trim_end().replace('\n', "; "))?;
        }
        if !self.namespace.is_empty() {
            write!(f, " [namespace {}]", self.namespace)?;
        }
        Ok(())
    }
}

/// What stands for a secret header value wherever the cache keeps one: `sha256:<hex>`.
pub fn secret_digest(value: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, value.as_bytes());
    format!("sha256:{}", hex(digest.as_ref()))
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 0xf)] as char);
    }
    out
}

fn coding_class(headers: &HeaderMap) -> String {
    let mut class = String::new();
    for coding in Accepted::of(headers).names() {
        if !class.is_empty() {
            class.push(',');
        }
        class.push_str(coding);
    }
    if class.is_empty() {
        class.push_str(UNCODED);
    }
    class
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::ACCEPT_ENCODING;
    use http::HeaderValue;

    fn class(accept_encoding: Option<&str>) -> String {
        let mut headers = HeaderMap::new();
        if let Some(value) = accept_encoding {
            headers.insert(
                ACCEPT_ENCODING,
                HeaderValue::from_str(value).expect("ascii"),
            );
        }
        coding_class(&headers)
    }

    #[test]
    fn accept_encoding_collapses_to_a_class() {
        let cases = [
            (None, "identity"),
            (Some(""), "identity"),
            (Some("gzip, deflate, br, zstd"), "br,deflate,gzip,zstd"),
            (Some("zstd,br,gzip,deflate"), "br,deflate,gzip,zstd"),
            (Some("gzip;q=1.0, identity; q=0.5, *;q=0"), "gzip"),
            (Some("x-gzip"), "gzip"),
            (Some("br;q=0, gzip"), "gzip"),
            (Some("compress"), "identity"),
        ];
        for (header, want) in cases {
            assert_eq!(class(header), want, "{header:?}");
        }
    }

    #[test]
    fn key_ignores_fragment_and_default_port() {
        let headers = HeaderMap::new();
        let a = CacheKey::new(
            &Url::parse("https://A.test:443/x.js#top").expect("url"),
            &headers,
        );
        let b = CacheKey::new(&Url::parse("https://a.test/x.js").expect("url"), &headers);
        assert_eq!(a, b);
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.digest().len(), 64);
    }

    #[test]
    fn a_key_made_for_one_client_says_so() {
        let url = Url::parse("https://a.test/x.css").expect("url");
        let mut cookie = HeaderMap::new();
        cookie.insert("cookie", HeaderValue::from_static("session=1"));
        cookie.insert("user-agent", HeaderValue::from_static("A"));
        let agent = ["user-agent".to_owned()];
        let by_cookie = ["user-agent".to_owned(), "authorization".to_owned()];
        let cases = [
            (CacheKey::for_request(&url, &cookie, &[], false), true),
            (CacheKey::for_request(&url, &cookie, &[], true), false),
            (CacheKey::for_request(&url, &cookie, &agent, true), false),
            (CacheKey::for_request(&url, &cookie, &by_cookie, true), true),
            (CacheKey::new(&url, &HeaderMap::new()), false),
        ];
        for (key, per_client) in cases {
            assert_eq!(key.is_per_client(), per_client, "{key}");
        }
    }

    #[test]
    fn vary_values_are_part_of_the_key() {
        let url = Url::parse("https://a.test/x.css").expect("url");
        let vary = ["user-agent".to_owned()];
        let mut a = HeaderMap::new();
        a.insert("user-agent", HeaderValue::from_static("A"));
        let mut b = HeaderMap::new();
        b.insert("user-agent", HeaderValue::from_static("B"));
        assert_ne!(
            CacheKey::with_vary(&url, &a, &vary),
            CacheKey::with_vary(&url, &b, &vary)
        );
        assert_eq!(
            CacheKey::with_vary(&url, &a, &[]),
            CacheKey::with_vary(&url, &b, &[])
        );
        assert_eq!(
            CacheKey::with_vary(&url, &a, &vary),
            CacheKey::with_vary(&url, &a.clone(), &vary)
        );
    }

    #[test]
    fn a_namespace_is_a_key_space_of_its_own() {
        use crate::cache::http::namespace::NAMESPACE_HEADER;
        let url = Url::parse("https://a.test/x.js").expect("url");
        let named = |name: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(NAMESPACE_HEADER, HeaderValue::from_static(name));
            CacheKey::new(&url, &headers)
        };
        let default = CacheKey::new(&url, &HeaderMap::new());
        // The default namespace's keys are those of a cache without namespaces.
        let plain = ring::digest::digest(&ring::digest::SHA256, b"https://a.test/x.js\nidentity\n");
        assert_eq!(default.digest(), hex(plain.as_ref()));
        assert_eq!(named("default"), default);
        assert_ne!(named("team-a"), default);
        assert_ne!(named("team-a").digest(), named("team-b").digest());
        assert_eq!(named("team-a").namespace(), Some("team-a"));
        assert_eq!(default.namespace(), None);
        assert!(named("team-a").to_string().ends_with("[namespace team-a]"));
    }

    #[test]
    fn cookies_make_private_keys_unless_shared() {
        let url = Url::parse("https://a.test/x.js?v=1").expect("url");
        let with = |cookie: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(COOKIE, HeaderValue::from_static(cookie));
            headers
        };
        let (alice, bob) = (with("session=alice"), with("session=bob"));
        let private = |h: &HeaderMap| CacheKey::for_request(&url, h, &[], false);
        assert_ne!(private(&alice), private(&bob));
        assert_eq!(private(&alice), private(&with("session=alice")));
        assert_ne!(private(&alice), private(&HeaderMap::new()));
        assert!(
            !private(&alice).to_string().contains("alice"),
            "only a digest of the cookie"
        );
        let shared = |h: &HeaderMap| CacheKey::for_request(&url, h, &[], true);
        assert_eq!(shared(&alice), shared(&bob));
    }

    #[test]
    fn the_key_for_an_uncoded_body_is_that_of_a_client_accepting_no_coding() {
        let url = Url::parse("https://a.test/x.js?v=1").expect("url");
        let mut browser = HeaderMap::new();
        browser.insert(
            ACCEPT_ENCODING,
            HeaderValue::from_static("gzip, deflate, br, zstd"),
        );
        browser.insert("x-asset-proxy-namespace", HeaderValue::from_static("ci"));
        let mut plain = HeaderMap::new();
        plain.insert("x-asset-proxy-namespace", HeaderValue::from_static("ci"));
        let vary = ["x-asset-proxy-namespace".to_owned()];
        let uncoded = CacheKey::with_vary(&url, &plain, &vary);
        assert_eq!(
            CacheKey::with_vary(&url, &browser, &vary).for_uncoded_body(),
            Some(uncoded.clone())
        );
        assert_eq!(uncoded.for_uncoded_body(), None);
    }

    #[test]
    fn coding_class_is_part_of_the_key() {
        let url = Url::parse("https://a.test/x.js").expect("url");
        let mut gzip = HeaderMap::new();
        gzip.insert(ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        assert_ne!(
            CacheKey::new(&url, &gzip).digest(),
            CacheKey::new(&url, &HeaderMap::new()).digest()
        );
    }
}
