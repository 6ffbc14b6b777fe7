//! URLs as a client could send them: parsing, version detection, cache keys, rule matching
//! text. Nothing may panic, and a detected version's identity must itself parse as a URL.
#![no_main]

use asset_proxy::cache::http::key::CacheKey;
use asset_proxy::cache::http::{policy, version};
use asset_proxy::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(url) = url::Url::parse(text) else { return };
    let config = Config::default();
    if let Some(versioned) = version::detect(&url, &config.policy) {
        assert!(url::Url::parse(versioned.asset.as_str()).is_ok(), "identity of {url} is not a URL");
        assert!(!versioned.version.as_str().is_empty());
    }
    let mut headers = http::HeaderMap::new();
    if let Ok(value) = http::HeaderValue::from_bytes(data) {
        headers.insert(http::header::ACCEPT_ENCODING, value.clone());
        headers.insert(http::header::USER_AGENT, value);
    }
    let key = CacheKey::with_vary(&url, &headers, &["user-agent".to_owned()]);
    assert_eq!(key.digest().len(), 64);
    let _ = policy::match_text(&url);
    let _ = policy::classify_request(&http::Method::GET, &url, &headers, &config.policy, std::time::Duration::from_secs(60));
});
