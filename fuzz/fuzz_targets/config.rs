//! Config files: any bytes are either a valid config or an error naming a field; never a
//! panic.
#![no_main]

use asset_proxy::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err((field, message)) = Config::parse(text) {
        assert!(!field.is_empty() && !message.is_empty());
    }
});
