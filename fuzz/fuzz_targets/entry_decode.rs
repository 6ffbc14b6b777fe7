//! On-disk entries: any bytes decode to a verified entry or a corruption error; a decoded
//! entry encodes back to the same bytes; an entry kept as its frame gives the body a full
//! check gives, or none.
#![no_main]

use asset_proxy::cache::entry::{decode_metadata, CachedResponse};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_metadata(data);
    let bytes = Bytes::copy_from_slice(data);
    let checked = CachedResponse::decode(bytes.clone()).ok();
    if let Some(entry) = &checked {
        let again = CachedResponse::decode(entry.encode()).expect("re-encoded entry decodes");
        assert_eq!(again.body(), entry.body());
        let _ = entry.meta.header_map();
    }
    if let Ok(kept) = CachedResponse::decode_checking(bytes, data.len(), false, true) {
        if !kept.body_is_at_hand() {
            let body = kept.body();
            assert_eq!(body, checked.as_ref().and_then(|entry| entry.body()));
        }
    }
});
