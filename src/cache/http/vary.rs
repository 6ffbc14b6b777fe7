//! Which request headers a response varies on (its `Vary`), normalised: Accept-Encoding is
//! left out (it is always part of the key), and `Vary: *` matches no request. Pure.

use http::header::VARY;
use http::HeaderMap;

/// The names a response varies on, lower-case and sorted, Accept-Encoding left out; `None`
/// for `Vary: *` (the response cannot be matched to any request).
pub fn vary_names(headers: &HeaderMap) -> Option<Vec<String>> {
    let mut names = Vec::new();
    for value in headers.get_all(VARY) {
        for name in value.to_str().unwrap_or("*").split(',') {
            let name = name.trim().to_ascii_lowercase();
            match name.as_str() {
                "*" => return None,
                "" | "accept-encoding" => {}
                _ => names.push(name),
            }
        }
    }
    names.sort();
    names.dedup();
    Some(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn vary_names_are_normalised() {
        let cases: [(&[&'static str], Option<&[&str]>); 5] = [
            (&[], Some(&[])),
            (&["Accept-Encoding"], Some(&[])),
            (
                &["User-Agent, accept-encoding", "Accept-Language"],
                Some(&["accept-language", "user-agent"]),
            ),
            (&["Origin", "origin"], Some(&["origin"])),
            (&["Accept-Encoding, *"], None),
        ];
        for (lines, want) in cases {
            let mut headers = HeaderMap::new();
            for line in lines {
                headers.append(VARY, HeaderValue::from_static(line));
            }
            let want = want.map(|names| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>());
            assert_eq!(vary_names(&headers), want, "{lines:?}");
        }
    }
}
