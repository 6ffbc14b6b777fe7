//! What a tunnel's first bytes are: a TLS handshake (intercept), an HTTP/1.x request line
//! (serve), something else (relay), or too few to tell yet.

/// The first byte of a TLS record carrying a handshake message.
const TLS_HANDSHAKE: u8 = 0x16;
/// The longest HTTP method recognised at the start of a plain-HTTP tunnel, with its space.
const LONGEST_METHOD: usize = 16;

/// What a tunnel's first bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FirstBytes {
    /// A TLS handshake record: intercept.
    Tls,
    /// An HTTP/1.x request line: serve it.
    Http,
    /// Something else: relay it.
    Other,
    /// Too few bytes to tell.
    Unsure,
}

/// Classifies the first bytes a client sent into a tunnel.
pub(super) fn classify(first: &[u8]) -> FirstBytes {
    match first.first() {
        None => FirstBytes::Unsure,
        Some(&TLS_HANDSHAKE) => FirstBytes::Tls,
        Some(_) => {
            // An HTTP request line starts with a method token and a space.
            let token = first
                .iter()
                .take_while(|b| b.is_ascii_uppercase() || **b == b'-' || **b == b'_')
                .count();
            match first.get(token) {
                Some(b' ') if token > 0 => FirstBytes::Http,
                None if token == first.len() && token < LONGEST_METHOD => FirstBytes::Unsure,
                _ => FirstBytes::Other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_are_classified() {
        let cases: [(&[u8], FirstBytes); 9] = [
            (b"", FirstBytes::Unsure),
            (b"\x16\x03\x01\x02\x00", FirstBytes::Tls),
            (b"GET / HTTP/1.1\r\n", FirstBytes::Http),
            (b"OPTIONS * HTTP/1.1\r\n", FirstBytes::Http),
            (b"GE", FirstBytes::Unsure),
            (b"SSH-2.0-OpenSSH_9.2\r\n", FirstBytes::Other),
            (b"\x00\x00\x00\x08\x04\xd2\x16\x2f", FirstBytes::Other),
            (b"get / HTTP/1.1", FirstBytes::Other),
            (b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", FirstBytes::Other),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                classify(bytes),
                want,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
}
