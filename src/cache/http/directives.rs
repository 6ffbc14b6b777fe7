//! `Cache-Control` directives, as the policy and the freshness rules read them.

use http::header::CACHE_CONTROL;
use http::HeaderMap;

/// Whether `Cache-Control` has the directive `name` (with or without a value).
pub(crate) fn has_directive(headers: &HeaderMap, name: &str) -> bool {
    directives(headers).any(|(directive, _)| directive.eq_ignore_ascii_case(name))
}

pub(crate) fn directives(headers: &HeaderMap) -> impl Iterator<Item = (&str, Option<&str>)> {
    headers
        .get_all(CACHE_CONTROL)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| match item.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim())),
            None => (item, None),
        })
}
