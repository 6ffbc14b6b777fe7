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
    assert_eq!(decoded.body(), entry.body());
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

/// A compressible entry stored as its zstd frame, in its on-disk layout.
fn compressed_sample() -> (CachedResponse, Bytes) {
    let text: String = (0..2_000)
        .map(|n| format!("function f{n}(x) {{ return x + {n}; }}\n"))
        .collect();
    let body = Bytes::from(text);
    let url = Url::parse("https://a.test/main.js?v=1").expect("url");
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("text/javascript"));
    let meta = EntryMeta::new(
        CacheKey::new(&url, &HeaderMap::new()),
        StatusCode::OK,
        &headers,
        Lifetime::Pinned { ttl_secs: 60 },
        UNIX_EPOCH,
        &body,
    );
    let entry = CachedResponse::new(meta, body);
    assert!(entry.stored_zstd().is_some(), "compressible");
    let encoded = entry.encode();
    (entry, encoded)
}

#[test]
fn a_checked_file_read_again_keeps_its_frame_and_decodes_its_body_when_needed() {
    let (entry, encoded) = compressed_sample();
    let frame = entry.encodings.get(Coding::Zstd).expect("frame").clone();
    let buffer = encoded.len() + 100;

    let checked =
        CachedResponse::decode_checking(encoded.clone(), buffer, true, true).expect("valid");
    assert!(checked.body_is_at_hand(), "a first read decodes and checks");
    let blocking = CachedResponse::decode_checking(encoded.clone(), buffer, false, false);
    assert!(
        blocking.expect("valid").body_is_at_hand(),
        "decoded where asked to"
    );

    let kept =
        CachedResponse::decode_checking(encoded.clone(), buffer, false, true).expect("valid");
    assert!(!kept.body_is_at_hand(), "a read again keeps the frame only");
    assert_eq!(kept.encodings.get(Coding::Zstd), Some(&frame));
    assert_eq!(kept.body_bytes(), 0);
    assert_eq!(
        kept.held_bytes(),
        buffer as u64,
        "the buffer the frame lies in"
    );
    assert_eq!(kept.body(), entry.body(), "decoded when asked");
    assert_eq!(kept.held_bytes(), buffer as u64 + kept.meta.body_len);
    // Written again (a revalidated copy), it is the same file.
    assert_eq!(kept.with_meta(kept.meta.clone()).encode(), encoded);
}

#[test]
fn a_frame_kept_for_later_is_still_checked() {
    let (_, encoded) = compressed_sample();
    let last = encoded.len() - 5;
    let mut damaged = encoded.to_vec();
    damaged[last] ^= 0x01;
    // The frame's header still announces the body's length: kept, and caught on decoding.
    let kept = CachedResponse::decode_checking(Bytes::from(damaged), encoded.len(), false, true)
        .expect("the head is sound");
    assert_eq!(kept.body(), None);
    assert_eq!(kept.body_bytes(), 0);
    // A frame announcing another length is not kept: the length is checked on every read.
    let meta_end = PREAMBLE_LEN + metadata_len(&encoded).expect("preamble");
    let mut other_length = encoded.to_vec();
    other_length.truncate(meta_end);
    let shorter = compress::zstd_if_smaller(&[b'a'; 4096]).expect("compressible");
    other_length.extend_from_slice(&shorter);
    assert_eq!(
        CachedResponse::decode_checking(Bytes::from(other_length), encoded.len(), false, true)
            .err(),
        Some(CorruptEntry::Body)
    );
}
