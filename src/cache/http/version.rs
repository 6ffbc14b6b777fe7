//! Versioned-asset detection: a URL -> (asset identity, version). Pure.
//!
//! A version is looked for only in URLs of static assets (their file extension is in
//! `versioned.extensions`), so an API path with an ID-like segment is never pinned in the cache.
//! Places, in order: a version query parameter (`main.dart.js?v=abc`), a content hash in the
//! file name (`main.3f2a9c1b.js`, `index-BxK9a2Zq.js`), a version-like path segment
//! (`/v123/`, `/1.2.3/`, `/flutter-canvaskit/<hash>/`).

use std::fmt;

use serde::{Deserialize, Serialize};
use url::{Position, Url};

use crate::config::PolicyConfig;

/// An asset's identity: its URL with the version part taken out.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AssetId(String);

/// The version part of a versioned URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Version(String);

/// A URL split into the asset it names and the version of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionedAsset {
    /// The URL without its version.
    pub asset: AssetId,
    /// The version.
    pub version: Version,
}

impl AssetId {
    /// The identity as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Version {
    /// The version as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AssetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Splits a versioned asset URL into identity and version; `None` for anything else.
pub fn detect(url: &Url, policy: &PolicyConfig) -> Option<VersionedAsset> {
    // Only what the proxy fetches: an identity must be a URL with a host again.
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return None;
    }
    // Runs for every request: the usual cases (not an asset, a version parameter) allocate
    // nothing before the answer is known.
    let mut segments = url.path_segments()?;
    let file_name = segments.next_back()?;
    let (stem, extension) = file_name.rsplit_once('.')?;
    if !is_asset_extension(extension, policy) {
        return None;
    }
    if let Some(found) = from_query(url, &policy.version_query_params) {
        return Some(found);
    }
    let dirs: Vec<&str> = segments.collect();
    from_file_name(url, &dirs, stem, extension).or_else(|| from_directory(url, &dirs, file_name))
}

/// Whether a file name ending in `.extension` names an asset (compared ignoring case).
pub fn is_asset_extension(extension: &str, policy: &PolicyConfig) -> bool {
    policy
        .asset_extensions
        .iter()
        .any(|known| known.eq_ignore_ascii_case(extension))
}

fn from_query(url: &Url, params: &[String]) -> Option<VersionedAsset> {
    // Runs for every asset request: nothing is allocated until a version parameter is found,
    // and the usual case, that parameter alone, needs no second URL.
    let (mut found, mut count) = (None, 0);
    for (at, (name, value)) in url.query_pairs().enumerate() {
        count += 1;
        let version = !value.is_empty() && params.iter().any(|p| p.eq_ignore_ascii_case(&name));
        if version && found.is_none() {
            found = Some((at, value));
        }
    }
    let (index, version) = found?;
    if count == 1 {
        return Some(VersionedAsset {
            asset: AssetId(url[..Position::AfterPath].to_owned()),
            version: Version(version.into_owned()),
        });
    }
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let mut asset = url.clone();
    asset.set_fragment(None);
    let mut query = asset.query_pairs_mut();
    query.clear();
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i != index {
            query.append_pair(name, value);
        }
    }
    drop(query);
    Some(VersionedAsset {
        asset: AssetId(asset.to_string()),
        version: Version(version.into_owned()),
    })
}

fn from_file_name(url: &Url, dirs: &[&str], stem: &str, extension: &str) -> Option<VersionedAsset> {
    // Components of the stem after the first, each with the separator before it.
    let mut start = stem.find(['.', '-'])?;
    while start < stem.len() {
        let end = stem[start + 1..]
            .find(['.', '-'])
            .map_or(stem.len(), |i| start + 1 + i);
        let component = &stem[start + 1..end];
        if is_hash(component, false) {
            // The name without its hash, the extension in lower case.
            let mut file_name = String::with_capacity(stem.len() + extension.len());
            file_name.push_str(&stem[..start]);
            file_name.push_str(&stem[end..]);
            file_name.push('.');
            file_name.extend(extension.chars().map(|c| c.to_ascii_lowercase()));
            return Some(with_path(url, dirs, &file_name, component));
        }
        start = end;
    }
    None
}

fn from_directory(url: &Url, dirs: &[&str], file_name: &str) -> Option<VersionedAsset> {
    let index = dirs.iter().rposition(|dir| is_version_segment(dir))?;
    let mut kept: Vec<&str> = dirs.to_vec();
    let version = kept.remove(index);
    Some(with_path(url, &kept, file_name, version))
}

fn with_path(url: &Url, dirs: &[&str], file_name: &str, version: &str) -> VersionedAsset {
    // The segments come from the parsed URL, already in its normal form, so the identity is
    // their text joined: parsing it again as a URL would give the same (a test holds it).
    let mut asset = String::with_capacity(url.as_str().len());
    asset.push_str(&url[..Position::BeforePath]);
    for dir in dirs {
        asset.push('/');
        asset.push_str(dir);
    }
    asset.push('/');
    asset.push_str(file_name);
    asset.push_str(&url[Position::AfterPath..Position::AfterQuery]);
    VersionedAsset {
        asset: AssetId(asset),
        version: Version(version.to_owned()),
    }
}

/// `v12`, `v1.2.3`, `1.2.3`, or a hash.
fn is_version_segment(segment: &str) -> bool {
    let numbers = segment.strip_prefix(['v', 'V']).unwrap_or(segment);
    let dotted = !numbers.is_empty()
        && numbers
            .split('.')
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()));
    let prefixed_or_multi_part = numbers.len() < segment.len() || numbers.contains('.');
    (dotted && prefixed_or_multi_part) || is_hash(segment, true)
}

/// A content hash: 8 or more characters, either hex with a digit in it, or base64url with
/// digits and both cases (what random bytes look like, and what words do not).
fn is_hash(text: &str, allow_dash: bool) -> bool {
    if text.len() < 8 {
        return false;
    }
    let valid = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || (allow_dash && b == b'-');
    if !text.bytes().all(valid) {
        return false;
    }
    let has_digit = text.bytes().any(|b| b.is_ascii_digit());
    let hex = text.bytes().all(|b| b.is_ascii_hexdigit());
    let upper = text.bytes().any(|b| b.is_ascii_uppercase());
    let lower = text.bytes().any(|b| b.is_ascii_lowercase());
    has_digit && (hex || (upper && lower))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn split(url: &str) -> Option<(String, String)> {
        let policy = Config::default().policy;
        let url = Url::parse(url).expect("test URL parses");
        detect(&url, &policy).map(|v| (v.asset.0, v.version.0))
    }

    #[test]
    fn versioned_urls_split_into_identity_and_version() {
        let cases = [
            ("https://a.test/main.dart.js?v=abc", "https://a.test/main.dart.js", "abc"),
            ("https://a.test/main.dart.js?x=1&ver=9&y=2", "https://a.test/main.dart.js?x=1&y=2", "9"),
            ("https://a.test/app.js?BUILD=77", "https://a.test/app.js", "77"),
            ("https://a.test/v123/main.dart.js", "https://a.test/main.dart.js", "v123"),
            ("https://a.test/lib/1.2.3/lib.min.js", "https://a.test/lib/lib.min.js", "1.2.3"),
            ("https://a.test/app.3f2a9c1b.js", "https://a.test/app.js", "3f2a9c1b"),
            ("https://a.test/app-3f2a9c1b.css", "https://a.test/app.css", "3f2a9c1b"),
            ("https://a.test/app.3f2a9c1b.JS", "https://a.test/app.js", "3f2a9c1b"),
            ("https://a.test/assets/index-BxK9a2Zq.js", "https://a.test/assets/index.js", "BxK9a2Zq"),
            ("https://a.test/app.3f2a9c1b.min.js", "https://a.test/app.min.js", "3f2a9c1b"),
            (
                "https://gstatic.test/flutter-canvaskit/0123456789abcdef0123456789abcdef01234567/canvaskit.wasm",
                "https://gstatic.test/flutter-canvaskit/canvaskit.wasm",
                "0123456789abcdef0123456789abcdef01234567",
            ),
            ("http://a.test:8080/static/v2/logo.PNG", "http://a.test:8080/static/logo.PNG", "v2"),
        ];
        for (url, asset, version) in cases {
            assert_eq!(
                split(url),
                Some((asset.to_owned(), version.to_owned())),
                "{url}"
            );
        }
    }

    #[test]
    fn an_identity_is_what_the_url_parser_makes_of_it() {
        let cases = [
            (
                "https://user:pw@a.test:8443/x/app.3f2a9c1b.js?q=%20a&b#frag",
                "https://user:pw@a.test:8443/x/app.js?q=%20a&b",
            ),
            (
                "https://[::1]/static/v2/lo%20go.png?x",
                "https://[::1]/static/lo%20go.png?x",
            ),
            (
                "http://a.test/%7Euser/%2E%2E/v1.2.3/b%2Fc/app-3f2a9c1b.css",
                "http://a.test/v1.2.3/b%2Fc/app.css",
            ),
            (
                "https://a.test/a//v9/app.js?v",
                "https://a.test/a//app.js?v",
            ),
            (
                "https://xn--bcher-kva.test/%C3%BC/0123456789abcdef/app.JS?",
                "https://xn--bcher-kva.test/%C3%BC/app.JS?",
            ),
        ];
        for (url, identity) in cases {
            let (asset, _) = split(url).unwrap_or_else(|| panic!("{url} is versioned"));
            assert_eq!(asset, identity, "{url}");
            let reparsed = Url::parse(&asset).expect("identity parses");
            assert_eq!(reparsed.as_str(), asset, "{url}");
        }
    }

    #[test]
    fn other_urls_are_not_versioned() {
        let cases = [
            "https://a.test/main.dart.js",
            "https://a.test/api/data?v=2",
            "https://a.test/index.html?v=2",
            "https://a.test/users/a1b2c3d4e5/profile",
            "https://a.test/deadbeefcafe/app.js",
            "https://a.test/javascript/bundle12.js",
            "https://a.test/2024/app.js",
            "https://a.test/app.js?v=",
            "https://a.test/",
            "https://a.test/abc1234/app.js",
            "http.:/v1//https:XN---%000x32..css?=2a0",
            "file:///v1/app.js",
        ];
        for url in cases {
            assert_eq!(split(url), None, "{url}");
        }
    }
}
