//! Namespaces: separate key spaces in one cache, for projects, tenants or CI runs. Pure.
//!
//! A request names its namespace with the `X-Asset-Proxy-Namespace` header or, when the proxy
//! asks for no credentials, with the user name of its proxy URL
//! (`http://team-a@127.0.0.1:8080` sends `Proxy-Authorization: Basic team-a:`). A CONNECT's
//! namespace holds for every request in its tunnel. Naming none (or `default`) is the default
//! namespace, whose keys are the keys of a cache without namespaces.
//!
//! The proxy puts the namespace it settled on in the request's `X-Asset-Proxy-Namespace` (and
//! removes it before anything goes upstream), so the key of every request carries it.

use base64::Engine;
use http::header::PROXY_AUTHORIZATION;
use http::{HeaderMap, HeaderName};

/// The request header that names a namespace, and carries the settled one to the cache.
pub const NAMESPACE_HEADER: HeaderName = HeaderName::from_static("x-asset-proxy-namespace");

/// The name of the default namespace.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Longest namespace name.
const MAX_LEN: usize = 64;

/// Checks a namespace name: 1 to 64 of `A-Z a-z 0-9 . _ -`.
pub fn check(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > MAX_LEN || !name.chars().all(allowed) {
        return Err(format!(
            "namespace {:?}: use 1 to {MAX_LEN} of A-Z a-z 0-9 . _ -",
            name.chars().take(MAX_LEN + 1).collect::<String>()
        ));
    }
    Ok(())
}

/// The namespace a request names itself, `None` when it names none.
/// `from_user`: whether the proxy URL's user name counts (it does when the proxy asks for
/// no credentials; otherwise the user name is a credential).
pub fn named_by(headers: &HeaderMap, from_user: bool) -> Result<Option<String>, String> {
    let header = headers
        .get(&NAMESPACE_HEADER)
        .map(|v| v.to_str().map(str::trim).map_err(|_| "namespace: not text"))
        .transpose()?;
    let user = if from_user { basic_user(headers) } else { None };
    let Some(name) = header.map(str::to_owned).or(user) else {
        return Ok(None);
    };
    check(&name)?;
    Ok(Some(name))
}

/// The namespace a request settled on, as the proxy set it: `None` for the default.
pub fn settled(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(&NAMESPACE_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|name| *name != DEFAULT_NAMESPACE && check(name).is_ok())
}

/// The user name of `Proxy-Authorization: Basic`, when there is a non-empty one.
fn basic_user(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(PROXY_AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let user = text.split_once(':').map_or(text.as_str(), |(user, _)| user);
    (!user.is_empty()).then(|| user.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&HeaderName, &str)]) -> HeaderMap {
        let mut out = HeaderMap::new();
        for (name, value) in pairs {
            out.insert(*name, HeaderValue::from_str(value).expect("ascii"));
        }
        out
    }

    #[test]
    fn the_header_or_the_proxy_user_names_the_namespace() {
        let basic = |user_pass: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(user_pass)
            )
        };
        // What each names: "" none, "!" refused.
        let cases: [(HeaderMap, bool, &str); 9] = [
            (HeaderMap::new(), true, ""),
            (headers(&[(&NAMESPACE_HEADER, "team-a")]), false, "team-a"),
            (
                headers(&[(&NAMESPACE_HEADER, " ci.42_x ")]),
                false,
                "ci.42_x",
            ),
            (headers(&[(&NAMESPACE_HEADER, "default")]), false, "default"),
            (headers(&[(&NAMESPACE_HEADER, "a/b")]), false, "!"),
            (
                headers(&[(&PROXY_AUTHORIZATION, &basic("team-b:"))]),
                true,
                "team-b",
            ),
            (
                headers(&[(&PROXY_AUTHORIZATION, &basic("team-b:secret"))]),
                false,
                "",
            ),
            (
                headers(&[
                    (&PROXY_AUTHORIZATION, &basic("team-b:x")),
                    (&NAMESPACE_HEADER, "team-c"),
                ]),
                true,
                "team-c",
            ),
            (headers(&[(&PROXY_AUTHORIZATION, "Bearer abc")]), true, ""),
        ];
        for (headers, from_user, want) in cases {
            let got = match named_by(&headers, from_user) {
                Ok(name) => name.unwrap_or_default(),
                Err(_) => "!".to_owned(),
            };
            assert_eq!(got, want, "{headers:?}");
        }
        assert!(check(&"x".repeat(64)).is_ok());
        assert!(check(&"x".repeat(65)).is_err());
        assert!(check("").is_err());
    }
}
