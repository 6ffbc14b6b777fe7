//! Who may use the proxy: `Proxy-Authorization: Basic` credentials, checked without leaking
//! through timing, and the 407 that asks for them.

use base64::Engine;
use http::header::{PROXY_AUTHENTICATE, PROXY_AUTHORIZATION};
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use crate::body::{full, ProxyBody};
use crate::config::Credentials;

/// Compares two secrets in time that depends on neither: their digests are compared whole.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let digest = |bytes: &[u8]| ring::digest::digest(&ring::digest::SHA256, bytes);
    let (a, b) = (digest(a), digest(b));
    a.as_ref()
        .iter()
        .zip(b.as_ref())
        .fold(0u8, |diff, (x, y)| diff | (x ^ y))
        == 0
}

/// The proxy credentials clients must present, if any.
#[derive(Clone, Default)]
pub struct ProxyAuth {
    /// base64 of `user:password`, as it follows `Basic ` in the header.
    expected: Option<String>,
}

impl ProxyAuth {
    /// Requires `credentials` when given; lets everyone in otherwise.
    pub fn new(credentials: Option<&Credentials>) -> ProxyAuth {
        let expected = credentials.map(|c| {
            base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", c.username, c.password))
        });
        ProxyAuth { expected }
    }

    /// Whether the proxy asks for no credentials (then a proxy URL's user name may name a
    /// namespace instead).
    pub fn is_open(&self) -> bool {
        self.expected.is_none()
    }

    /// Whether a request's `Proxy-Authorization` lets it through.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(expected) = &self.expected else {
            return true;
        };
        let given = headers
            .get(PROXY_AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let (scheme, token) = given.trim().split_once(' ').unwrap_or(("", ""));
        scheme.eq_ignore_ascii_case("basic")
            && same_secret(token.trim().as_bytes(), expected.as_bytes())
    }

    /// The 407 asking for credentials.
    pub fn challenge() -> Response<ProxyBody> {
        challenge_for(
            "asset-proxy: proxy authentication required\n",
            "Basic realm=\"asset-proxy\"",
        )
    }

    /// The 407 asking for a namespace (`clients.require_namespace`): browsers send proxy
    /// credentials only when asked, and the user name they send names it.
    pub fn namespace_challenge() -> Response<ProxyBody> {
        challenge_for(
            "asset-proxy: name a namespace: the user name of the proxy URL \
             (http://NAME@host:port) or the X-Asset-Proxy-Namespace header\n",
            "Basic realm=\"asset-proxy namespace\"",
        )
    }
}

fn challenge_for(body: &'static str, authenticate: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(full(body));
    *response.status_mut() = StatusCode::PROXY_AUTHENTICATION_REQUIRED;
    response
        .headers_mut()
        .insert(PROXY_AUTHENTICATE, HeaderValue::from_static(authenticate));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_checked() {
        let auth = ProxyAuth::new(Some(&Credentials {
            username: "fleet".into(),
            password: "pa:ss".into(),
        }));
        let header = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                PROXY_AUTHORIZATION,
                HeaderValue::from_str(value).expect("ascii"),
            );
            headers
        };
        let good = base64::engine::general_purpose::STANDARD.encode("fleet:pa:ss");
        assert!(auth.allows(&header(&format!("Basic {good}"))));
        assert!(auth.allows(&header(&format!("basic  {good}"))));
        assert!(!auth.allows(&header("Basic ZmxlZXQ6d3Jvbmc=")));
        assert!(!auth.allows(&header(&format!("Bearer {good}"))));
        assert!(!auth.allows(&HeaderMap::new()));
        assert!(ProxyAuth::default().allows(&HeaderMap::new()));
        assert!(same_secret(b"abc", b"abc") && !same_secret(b"abc", b"abd"));
    }
}
