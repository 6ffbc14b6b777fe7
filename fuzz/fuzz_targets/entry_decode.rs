//! On-disk entries: any bytes decode to a verified entry or a corruption error; a decoded
//! entry encodes back to the same bytes.
#![no_main]

use asset_proxy::cache::entry::{decode_metadata, CachedResponse};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_metadata(data);
    if let Ok(entry) = CachedResponse::decode(Bytes::copy_from_slice(data)) {
        let again = CachedResponse::decode(entry.encode()).expect("re-encoded entry decodes");
        assert_eq!(again.body, entry.body);
        let _ = entry.meta.header_map();
    }
});
