//! Finding the same-origin assets a document or bootstrap script refers to: `<script src>`,
//! `<link rel=preload|modulepreload|stylesheet href>`, and string literals that are versioned
//! asset URLs (`"main.dart.js?v=42"`, `'/flutter-canvaskit/<hash>/canvaskit.wasm'`). Pure.

use std::sync::LazyLock;

use regex::Regex;
use url::Url;

use crate::cache::http::version;
use crate::config::PolicyConfig;

/// References kept from one body at most.
pub const MAX_REFERENCES: usize = 64;

/// What kind of body is scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An HTML document: tags, and the literals of its inline scripts.
    Html,
    /// A bootstrap script: its string literals.
    Script,
}

/// `<script ...>` and `<link ...>` tags, with their attribute text.
static TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?is)<(script|link)\b([^>]*)>").expect("constant pattern"));

/// `name=value` attributes, the value double-, single- or not quoted.
static ATTRIBUTE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?is)\b([a-z-]+)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))"#)
        .expect("constant pattern")
});

/// Quoted strings without spaces or markup in them.
static LITERAL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"["'`]([^"'`\s<>\\]{3,512})["'`]"#).expect("constant pattern"));

/// The same-origin URLs `text` refers to, resolved against `base`, in order of appearance,
/// without repeats, at most `MAX_REFERENCES`.
pub fn references(text: &str, base: &Url, kind: Kind, policy: &PolicyConfig) -> Vec<Url> {
    let mut found: Vec<Url> = Vec::new();
    let mut keep = |candidate: &str, versioned_only: bool| {
        let Ok(url) = base.join(candidate.trim()) else {
            return;
        };
        let same_origin = url.scheme() == base.scheme()
            && url.host_str() == base.host_str()
            && url.port_or_known_default() == base.port_or_known_default();
        if !same_origin || url == *base || found.contains(&url) || found.len() >= MAX_REFERENCES {
            return;
        }
        if versioned_only && version::detect(&url, policy).is_none() {
            return;
        }
        found.push(url);
    };
    if kind == Kind::Html {
        for tag in TAG.captures_iter(text) {
            let (name, attributes) = (&tag[1], &tag[2]);
            if let Some(target) = tag_target(&name.to_ascii_lowercase(), attributes) {
                keep(&target, false);
            }
        }
    }
    for literal in LITERAL.captures_iter(text) {
        let candidate = &literal[1];
        if candidate.contains('.') && !candidate.starts_with("data:") {
            keep(candidate, true);
        }
    }
    found
}

/// The URL a `<script>` or `<link>` tag loads, if it is one the page needs.
fn tag_target(name: &str, attributes: &str) -> Option<String> {
    let mut src = None;
    let mut href = None;
    let mut rel = String::new();
    for attribute in ATTRIBUTE.captures_iter(attributes) {
        let value = attribute
            .get(2)
            .or_else(|| attribute.get(3))
            .or_else(|| attribute.get(4))
            .map_or("", |m| m.as_str());
        match attribute[1].to_ascii_lowercase().as_str() {
            "src" => src = Some(value.to_owned()),
            "href" => href = Some(value.to_owned()),
            "rel" => rel = value.to_ascii_lowercase(),
            _ => {}
        }
    }
    match name {
        "script" => src,
        _ if rel
            .split_ascii_whitespace()
            .any(|r| matches!(r, "preload" | "modulepreload" | "stylesheet")) =>
        {
            href
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn found(text: &str, kind: Kind) -> Vec<String> {
        let base = Url::parse("https://app.test/web/index.html").expect("base");
        references(text, &base, kind, &Config::default().policy)
            .into_iter()
            .map(String::from)
            .collect()
    }

    #[test]
    fn html_tags_and_versioned_literals() {
        let html = r#"<!doctype html><html><head>
<script src="flutter_bootstrap.js" async></script>
<SCRIPT type=module SRC=/assets/app.3f2a9c1b.js></SCRIPT>
<link rel="modulepreload" href="chunk-a1b2c3d4.js">
<link rel=stylesheet href='/css/site.css?v=7'>
<link rel="icon" href="favicon.png">
<link rel="preload" as="fetch" crossorigin href="https://cdn.other.test/lib.js?v=1">
<script>var main = "main.dart.js?v=42"; var name = "not a url"; var api = '/api/user.json';</script>
<img src="/logo.v2.png">
</head></html>"#;
        assert_eq!(
            found(html, Kind::Html),
            [
                "https://app.test/web/flutter_bootstrap.js",
                "https://app.test/assets/app.3f2a9c1b.js",
                "https://app.test/web/chunk-a1b2c3d4.js",
                "https://app.test/css/site.css?v=7",
                "https://app.test/web/main.dart.js?v=42",
            ]
        );
    }

    #[test]
    fn script_literals_that_are_versioned_assets() {
        let script = r#"
_flutter.loader.load({ config: { canvasKitBaseUrl: "/flutter-canvaskit/36335019a8eab588c3c2ea783c618d90505be233/" } });
const main = 'main.dart.js?v=1700000000';
const wasm = `/flutter-canvaskit/36335019a8eab588c3c2ea783c618d90505be233/canvaskit.wasm`;
const same = "main.dart.js?v=1700000000";
const plain = "flutter.js"; const msg = "Loading..."; const other = "https://x.test/a.js?v=1";
const data = "data:text/javascript;base64,AAAA.js?v=1";
"#;
        assert_eq!(
            found(script, Kind::Script),
            [
                "https://app.test/web/main.dart.js?v=1700000000",
                "https://app.test/flutter-canvaskit/36335019a8eab588c3c2ea783c618d90505be233/canvaskit.wasm",
            ]
        );
    }

    #[test]
    fn scripts_are_not_scanned_for_tags_and_limits_hold() {
        assert!(found(r#"x = '<script src="a.js"></script>'"#, Kind::Script).is_empty());
        let many: String = (0..200).map(|n| format!("'/a/b{n}.js?v=1' ")).collect();
        assert_eq!(found(&many, Kind::Script).len(), MAX_REFERENCES);
    }
}
