//! What of a URL may be written to the log: credentials travel in URLs too (signed CDN and
//! storage links, `?access_token=`, OAuth codes, `user:password@`), and the log is read by
//! more people, and kept longer, than the requests it records. Their values are replaced
//! with `REDACTED`; the rest of the URL stays as it came, so a line still says which asset
//! it was.

use std::borrow::Cow;

/// What replaces a credential.
pub const REDACTED: &str = "REDACTED";

/// Query parameter names that hold a credential, compared whole (ASCII case ignored).
const SECRET_NAMES: &[&str] = &["key", "sig", "code", "sid", "pwd", "pass"];
/// Parts of query parameter names that hold a credential (`access_token`,
/// `X-Amz-Signature`, `client_secret`, `api_key`, …).
const SECRET_NAME_PARTS: &[&str] = &[
    "token",
    "secret",
    "passw",
    "signature",
    "credential",
    "apikey",
    "api_key",
    "api-key",
    "auth",
    "session",
    "jwt",
];

/// `url` as the log may show it: a password in its user information and the values of
/// credential-like query parameters replaced with [`REDACTED`]. Borrowed when there is
/// nothing to hide.
pub fn url(url: &str) -> Cow<'_, str> {
    let (before_query, query) = match url.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (url, None),
    };
    let head = without_password(before_query);
    let query = query.map(without_secret_values);
    if matches!(head, Cow::Borrowed(_)) && matches!(query, None | Some(Cow::Borrowed(_))) {
        return Cow::Borrowed(url);
    }
    let mut shown = head.into_owned();
    if let Some(query) = query {
        shown.push('?');
        shown.push_str(&query);
    }
    Cow::Owned(shown)
}

/// `url`'s part before the query, with a password in its user information redacted.
fn without_password(before_query: &str) -> Cow<'_, str> {
    let Some(scheme_end) = before_query.find("://") else {
        return Cow::Borrowed(before_query);
    };
    let authority_start = scheme_end + 3;
    let authority_end = before_query[authority_start..]
        .find('/')
        .map_or(before_query.len(), |at| authority_start + at);
    let authority = &before_query[authority_start..authority_end];
    let Some((user_info, _host)) = authority.rsplit_once('@') else {
        return Cow::Borrowed(before_query);
    };
    let Some((user, _password)) = user_info.split_once(':') else {
        return Cow::Borrowed(before_query);
    };
    let password_start = authority_start + user.len() + 1;
    let password_end = authority_start + user_info.len();
    Cow::Owned(format!(
        "{}{REDACTED}{}",
        &before_query[..password_start],
        &before_query[password_end..]
    ))
}

/// `query` with the values of credential-like parameters redacted.
fn without_secret_values(query: &str) -> Cow<'_, str> {
    let hides = |pair: &str| {
        pair.split_once('=')
            .is_some_and(|(name, value)| !value.is_empty() && is_secret_name(name))
    };
    if !query.split('&').any(hides) {
        return Cow::Borrowed(query);
    }
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if hides(pair) => format!("{name}={REDACTED}"),
            _ => pair.to_owned(),
        })
        .collect();
    Cow::Owned(pairs.join("&"))
}

fn is_secret_name(name: &str) -> bool {
    let contains = |part: &str| {
        name.as_bytes()
            .windows(part.len())
            .any(|window| window.eq_ignore_ascii_case(part.as_bytes()))
    };
    SECRET_NAMES
        .iter()
        .any(|secret| name.eq_ignore_ascii_case(secret))
        || SECRET_NAME_PARTS.iter().any(|part| contains(part))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_urls_are_redacted_and_the_rest_kept() {
        let cases = [
            // Nothing to hide: the very text, borrowed.
            ("https://a.test/main.4f3a.js", "https://a.test/main.4f3a.js"),
            ("https://a.test/app.js?v=2&lang=en", "https://a.test/app.js?v=2&lang=en"),
            ("https://user@a.test/x", "https://user@a.test/x"),
            ("https://a.test/x?token=", "https://a.test/x?token="),
            ("https://a.test/x?", "https://a.test/x?"),
            // Query parameters holding credentials.
            (
                "https://a.test/api?access_token=abc.def&v=1",
                "https://a.test/api?access_token=REDACTED&v=1",
            ),
            (
                "https://bucket.s3.test/f.js?X-Amz-Credential=AKIA%2F1&X-Amz-Signature=9f&X-Amz-Expires=60",
                "https://bucket.s3.test/f.js?X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED&X-Amz-Expires=60",
            ),
            (
                "https://cdn.test/a.wasm?Expires=1&Signature=xyz&Key-Pair-Id=K1",
                "https://cdn.test/a.wasm?Expires=1&Signature=REDACTED&Key-Pair-Id=K1",
            ),
            ("https://a.test/cb?code=4/0Ab&state=s", "https://a.test/cb?code=REDACTED&state=s"),
            ("wss://a.test/socket?sid=1&key=k", "wss://a.test/socket?sid=REDACTED&key=REDACTED"),
            (
                "https://a.test/x?client_secret=s&API_KEY=k&password=p",
                "https://a.test/x?client_secret=REDACTED&API_KEY=REDACTED&password=REDACTED",
            ),
            // A password in the user information.
            ("https://user:hunter2@a.test/x", "https://user:REDACTED@a.test/x"),
            (
                "ftp://u:p@w@a.test:21/f?token=t",
                "ftp://u:REDACTED@a.test:21/f?token=REDACTED",
            ),
        ];
        for (given, shown) in cases {
            let logged = url(given);
            assert_eq!(logged, shown, "{given}");
            assert_eq!(
                matches!(logged, Cow::Borrowed(_)),
                given == shown,
                "{given}"
            );
        }
    }
}
