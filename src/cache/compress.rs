//! Content codings the cache produces and reads: zstd for bodies stored compressed on disk,
//! and br, gzip or zstd for clients that accept them. Pure: bytes in, bytes out.

use std::io::{Read, Write};

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use http::HeaderMap;

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

/// Whether a stored response's body is worth compressing: it arrived without a content
/// coding, and its type is text-like (JS, CSS, JSON, HTML, SVG, XML) or wasm.
pub fn compressible(headers: &HeaderMap, body_len: usize) -> bool {
    let coded = headers
        .get(CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !v.trim().eq_ignore_ascii_case("identity"));
    if coded || body_len < MIN_BYTES {
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
    let mut encoder = zstd::stream::Encoder::new(Vec::new(), ZSTD_LEVEL).ok()?;
    encoder.include_checksum(true).ok()?;
    encoder.write_all(body).ok()?;
    let compressed = encoder.finish().ok()?;
    ((compressed.len() as f64) <= body.len() as f64 * MAX_RATIO).then(|| Bytes::from(compressed))
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
/// Runs for every cacheable request: it allocates nothing.
pub fn accept_encoding_items(headers: &HeaderMap) -> impl Iterator<Item = (&str, bool)> {
    headers
        .get_all(http::header::ACCEPT_ENCODING)
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

/// The codings a request accepts, among those the proxy makes.
pub fn accepted(headers: &HeaderMap) -> Vec<Coding> {
    let mut out = Vec::new();
    for (name, accepted) in accept_encoding_items(headers) {
        let named = [Coding::Zstd, Coding::Br, Coding::Gzip]
            .into_iter()
            .find(|coding| coding.as_str().eq_ignore_ascii_case(name));
        let Some(coding) = named else { continue };
        out.retain(|c| *c != coding);
        if accepted {
            out.push(coding);
        }
    }
    out
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
                vec![Coding::Gzip, Coding::Br, Coding::Zstd],
            ),
            (
                "br;q=1.0, gzip;q=0.5, *;q=0.1",
                vec![Coding::Br, Coding::Gzip],
            ),
            ("zstd;q=0, gzip", vec![Coding::Gzip]),
            ("identity", vec![]),
            ("", vec![]),
        ];
        for (value, want) in cases {
            assert_eq!(
                accepted(&headers(&[("accept-encoding", value)])),
                want,
                "{value}"
            );
        }
    }
}
