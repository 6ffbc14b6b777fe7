//! Content codings the cache produces and reads: zstd for bodies stored compressed on disk,
//! and br, gzip or zstd for clients that accept them; and which codings a request accepts.
//! Pure: bytes in, bytes out (each thread remembers the last `Accept-Encoding` it read).

use std::cell::RefCell;
use std::io::{Read, Write};

use bytes::Bytes;
use http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue};

/// Bodies smaller than this are stored as they are: a frame's overhead eats the gain.
const MIN_BYTES: usize = 1024;
/// A compressed body is kept only when it is at most this share of the original.
pub const MAX_RATIO: f64 = 0.9;
/// zstd level for stored bodies: fast to write, fast to read.
pub const ZSTD_LEVEL: i32 = 3;
/// Levels for bodies encoded for clients, once per entry.
const BROTLI_QUALITY: u32 = 5;
const GZIP_LEVEL: u32 = 6;

/// A content coding the proxy can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// Zstandard (RFC 8878).
    Zstd,
    /// Brotli (RFC 7932).
    Br,
    /// gzip (RFC 1952).
    Gzip,
}

impl Coding {
    /// The coding's name in `Content-Encoding`.
    pub fn as_str(self) -> &'static str {
        match self {
            Coding::Zstd => "zstd",
            Coding::Br => "br",
            Coding::Gzip => "gzip",
        }
    }
}

/// Whether a response's body came without a content coding: such a body answers every
/// client, whatever codings it accepts.
pub fn uncoded(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.trim().eq_ignore_ascii_case("identity"))
}

/// Whether a stored response's body is worth compressing: it arrived without a content
/// coding, and its type is text-like (JS, CSS, JSON, HTML, SVG, XML) or wasm.
pub fn compressible(headers: &HeaderMap, body_len: usize) -> bool {
    if !uncoded(headers) || body_len < MIN_BYTES {
        return false;
    }
    let Some(content_type) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence.starts_with("text/")
        || essence.ends_with("+json")
        || essence.ends_with("+xml")
        || matches!(
            essence.as_str(),
            "application/javascript"
                | "application/x-javascript"
                | "application/ecmascript"
                | "application/json"
                | "application/xml"
                | "application/wasm"
        )
}

/// `body` as a zstd frame (with its content checksum), if that saves enough.
pub fn zstd_if_smaller(body: &[u8]) -> Option<Bytes> {
    // In one call with the size known, zstd sizes its tables to the body and needs no window
    // of its own; a frame that does not fit the share worth keeping is given up, so an
    // incompressible body costs no buffer larger than itself.
    let mut compressor = zstd::bulk::Compressor::new(ZSTD_LEVEL).ok()?;
    compressor.include_checksum(true).ok()?;
    let mut frame = Vec::with_capacity((body.len() as f64 * MAX_RATIO) as usize);
    compressor.compress_to_buffer(body, &mut frame).ok()?;
    // Kept beside the body for as long as the entry: no room it does not use.
    frame.shrink_to_fit();
    Some(Bytes::from(frame))
}

/// The body length a zstd frame's header announces, if it does (the frames this proxy makes
/// do); read from the header alone.
pub fn zstd_content_size(frame: &[u8]) -> Option<u64> {
    zstd::zstd_safe::get_frame_content_size(frame)
        .ok()
        .flatten()
}

/// Decodes a zstd frame of a body that is `expected_len` bytes long; `None` when it is not
/// one (damaged, or longer than announced).
pub fn unzstd(frame: &[u8], expected_len: u64) -> Option<Bytes> {
    let capacity = usize::try_from(expected_len).ok()?;
    let mut out = Vec::with_capacity(capacity);
    let decoder = zstd::stream::Decoder::new(frame).ok()?;
    decoder
        .take(expected_len.saturating_add(1))
        .read_to_end(&mut out)
        .ok()?;
    (out.len() as u64 == expected_len).then(|| Bytes::from(out))
}

/// A reader of `body` decoded from the content coding named `coding` (`identity` or empty: as
/// it is); `None` for a coding this proxy does not know.
pub fn decoder<'a>(coding: &str, body: &'a [u8]) -> Option<Box<dyn std::io::Read + 'a>> {
    Some(match coding.trim().to_ascii_lowercase().as_str() {
        "identity" | "" => Box::new(body),
        "gzip" | "x-gzip" => Box::new(flate2::read::MultiGzDecoder::new(body)),
        "deflate" => Box::new(flate2::read::ZlibDecoder::new(body)),
        "br" => Box::new(brotli::Decompressor::new(body, 4096)),
        "zstd" => Box::new(zstd::stream::read::Decoder::new(body).ok()?),
        _ => return None,
    })
}

/// `body` encoded with `coding` for a client.
pub fn encode(coding: Coding, body: &[u8]) -> Option<Bytes> {
    let encoded = match coding {
        Coding::Zstd => return zstd_if_smaller(body),
        Coding::Br => {
            let mut out = Vec::new();
            let params = brotli::enc::BrotliEncoderParams {
                quality: BROTLI_QUALITY as i32,
                ..Default::default()
            };
            brotli::BrotliCompress(&mut &body[..], &mut out, &params).ok()?;
            out
        }
        Coding::Gzip => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(GZIP_LEVEL));
            encoder.write_all(body).ok()?;
            encoder.finish().ok()?
        }
    };
    Some(Bytes::from(encoded))
}

/// The codings a request's `Accept-Encoding` names, as written (`x-gzip` as `gzip`; compare
/// them ignoring case), each with whether it is accepted (a q-value above 0), in order.
fn accept_encoding_items(headers: &HeaderMap) -> impl Iterator<Item = (&str, bool)> {
    headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|item| {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0))
            });
            let name = if name.eq_ignore_ascii_case("x-gzip") {
                "gzip"
            } else {
                name
            };
            (name, !refused)
        })
}

/// The codings a request's `Accept-Encoding` tells apart for the cache, in the order they
/// are written in a cache key.
const KNOWN_CODINGS: [&str; 4] = ["br", "deflate", "gzip", "zstd"];

/// Which of `KNOWN_CODINGS` a request accepts; a coding named twice is decided by the last.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Accepted([bool; KNOWN_CODINGS.len()]);

thread_local! {
    /// The last `Accept-Encoding` read on this thread and what it accepts: a client sends the
    /// same one with every request, and a request reads it more than once.
    static LAST_ACCEPT_ENCODING: RefCell<Option<(HeaderValue, Accepted)>> =
        const { RefCell::new(None) };
}

impl Accepted {
    /// What `headers` accept.
    pub fn of(headers: &HeaderMap) -> Accepted {
        let mut values = headers.get_all(ACCEPT_ENCODING).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return Accepted::parse(headers);
        };
        LAST_ACCEPT_ENCODING.with_borrow_mut(|last| match last {
            Some((seen, accepted)) if seen == value => *accepted,
            _ => {
                let accepted = Accepted::parse(headers);
                *last = Some((value.clone(), accepted));
                accepted
            }
        })
    }

    fn parse(headers: &HeaderMap) -> Accepted {
        let mut accepted = Accepted::default();
        for (name, on) in accept_encoding_items(headers) {
            let known = KNOWN_CODINGS
                .iter()
                .position(|known| known.eq_ignore_ascii_case(name));
            if let Some(i) = known {
                accepted.0[i] = on;
            }
        }
        accepted
    }

    /// Whether `coding` is accepted.
    pub fn includes(self, coding: Coding) -> bool {
        KNOWN_CODINGS
            .iter()
            .position(|known| *known == coding.as_str())
            .is_some_and(|i| self.0[i])
    }

    /// The names of the codings accepted, in `KNOWN_CODINGS` order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        KNOWN_CODINGS
            .into_iter()
            .zip(self.0)
            .filter_map(|(name, on)| on.then_some(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().expect("value"));
        }
        map
    }

    #[test]
    fn what_is_compressible() {
        let cases = [
            (vec![("content-type", "text/javascript")], 5000, true),
            (
                vec![("content-type", "application/javascript; charset=utf-8")],
                5000,
                true,
            ),
            (vec![("content-type", "image/svg+xml")], 5000, true),
            (vec![("content-type", "application/wasm")], 5000, true),
            (
                vec![("content-type", "application/manifest+json")],
                5000,
                true,
            ),
            (vec![("content-type", "text/css")], 100, false),
            (vec![("content-type", "image/png")], 5000, false),
            (vec![("content-type", "font/woff2")], 5000, false),
            (vec![], 5000, false),
            (
                vec![
                    ("content-type", "text/javascript"),
                    ("content-encoding", "gzip"),
                ],
                5000,
                false,
            ),
            (
                vec![
                    ("content-type", "text/html"),
                    ("content-encoding", "identity"),
                ],
                5000,
                true,
            ),
        ];
        for (pairs, len, want) in cases {
            assert_eq!(compressible(&headers(&pairs), len), want, "{pairs:?} {len}");
        }
    }

    #[test]
    fn codings_round_trip_and_damage_is_caught() {
        let body: Vec<u8> = (0..20_000u32)
            .flat_map(|n| format!("function f{n}() {{ return {n}; }}\n").into_bytes())
            .collect();
        let frame = zstd_if_smaller(&body).expect("text compresses");
        assert!(frame.len() < body.len() / 3);
        // RFC 8878 3.1.1.1.1: the frame header descriptor follows the 4-byte magic number;
        // its bit 2 says a content checksum ends the frame.
        assert_eq!(
            frame[4] & 0x04,
            0x04,
            "the frame carries its content checksum"
        );
        let held = zstd_if_smaller(&body)
            .and_then(|again| again.try_into_mut().ok())
            .map(|again| again.capacity());
        assert_eq!(
            held,
            Some(frame.len()),
            "the frame holds no room beyond its bytes"
        );
        assert_eq!(
            unzstd(&frame, body.len() as u64).as_deref(),
            Some(&body[..])
        );
        assert_eq!(
            unzstd(&frame, body.len() as u64 - 1),
            None,
            "longer than announced"
        );
        let mut damaged = frame.to_vec();
        let middle = damaged.len() / 2;
        damaged[middle] ^= 0x55;
        assert_ne!(
            unzstd(&damaged, body.len() as u64).as_deref(),
            Some(&body[..])
        );
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let random: Vec<u8> = (0..5000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        assert_eq!(
            zstd_if_smaller(&random),
            None,
            "incompressible bodies stay as they are"
        );

        let gzip = encode(Coding::Gzip, &body).expect("gzip");
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gzip[..])
            .read_to_end(&mut out)
            .expect("gunzip");
        assert_eq!(out, body);
        let br = encode(Coding::Br, &body).expect("br");
        let mut out = Vec::new();
        brotli::Decompressor::new(&br[..], 4096)
            .read_to_end(&mut out)
            .expect("unbrotli");
        assert_eq!(out, body);
    }

    #[test]
    fn accepted_codings_honour_q_zero() {
        let cases = [
            (
                "gzip, deflate, br, zstd",
                vec!["br", "deflate", "gzip", "zstd"],
            ),
            ("br;q=1.0, gzip;q=0.5, *;q=0.1", vec!["br", "gzip"]),
            ("zstd;q=0, gzip", vec!["gzip"]),
            ("gzip, GZIP;q=0", vec![]),
            ("x-gzip", vec!["gzip"]),
            ("identity", vec![]),
            ("", vec![]),
        ];
        for (value, want) in cases {
            let accepted = Accepted::of(&headers(&[("accept-encoding", value)]));
            assert_eq!(accepted.names().collect::<Vec<_>>(), want, "{value}");
            let gzip = want.contains(&"gzip");
            assert_eq!(accepted.includes(Coding::Gzip), gzip, "{value}");
        }
    }

    #[test]
    fn the_accept_encoding_remembered_is_only_reused_for_the_same_value() {
        // Alternating values on one thread: each answer is what a fresh reading gives.
        let values = [
            "gzip",
            "br",
            "gzip",
            "zstd;q=0, br",
            "zstd;q=0, br",
            "",
            "gzip",
        ];
        for value in values {
            let headers = headers(&[("accept-encoding", value)]);
            assert_eq!(Accepted::of(&headers), Accepted::parse(&headers), "{value}");
        }
        let mut two = HeaderMap::new();
        two.append(ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        two.append(ACCEPT_ENCODING, HeaderValue::from_static("br"));
        assert_eq!(
            Accepted::of(&two).names().collect::<Vec<_>>(),
            ["br", "gzip"]
        );
        assert_eq!(Accepted::of(&HeaderMap::new()), Accepted::default());
    }
}
