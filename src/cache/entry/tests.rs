//! Tests of the entry and its format.

use super::*;
use url::Url;

fn sample() -> CachedResponse {
    let url = Url::parse("https://a.test/app.js?v=1").expect("url");
    let key = CacheKey::new(&url, &HeaderMap::new());
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("text/javascript"));
    headers.insert(
        "x-raw",
        HeaderValue::from_bytes(b"caf\xe9").expect("obs-text is valid"),
    );
    let body = Bytes::from_static(b"console.log('hello')");
    let meta = EntryMeta::new(
        key,
        StatusCode::OK,
        &headers,
        Lifetime::Pinned { ttl_secs: 60 },
        UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        &body,
    );
    CachedResponse::new(meta, body)
}

#[test]
fn round_trip_keeps_every_byte() {
    let entry = sample();
    let decoded = CachedResponse::decode(entry.encode()).expect("valid");
    assert_eq!(
        serde_json::to_value(&decoded.meta).expect("json"),
        serde_json::to_value(&entry.meta).expect("json")
    );
    assert_eq!(decoded.body, entry.body);
    assert_eq!(decoded.meta.header_map()["x-raw"].as_bytes(), b"caf\xe9");
}

#[test]
fn every_kind_of_damage_is_caught() {
    let good = sample().encode();
    let flip = |at: usize| {
        let mut bytes = good.to_vec();
        bytes[at] ^= 0x01;
        Bytes::from(bytes)
    };
    let meta_len = metadata_len(&good).expect("a good preamble");
    let cases = [
        (Bytes::new(), CorruptEntry::Truncated),
        (good.slice(..10), CorruptEntry::Truncated),
        (
            good.slice(..PREAMBLE_LEN + meta_len - 1),
            CorruptEntry::Truncated,
        ),
        (good.slice(..good.len() - 1), CorruptEntry::Body),
        (flip(0), CorruptEntry::Format),
        (flip(PREAMBLE_LEN + 3), CorruptEntry::Metadata),
        (flip(good.len() - 1), CorruptEntry::Body),
        (
            Bytes::from([good.to_vec(), b"x".to_vec()].concat()),
            CorruptEntry::Body,
        ),
    ];
    for (bytes, want) in cases {
        assert_eq!(CachedResponse::decode(bytes).err(), Some(want));
    }
}
