//! Stateless header encoding: static table and raw literals only.

use crate::{integer, static_table};

/// Stateless encoder: never uses or changes the dynamic table (so the peer's SETTINGS_HEADER_TABLE_SIZE never matters),
/// never Huffman-encodes (cheapest on CPU; RFC 7541 allows it).
///
/// Because it never emits a dynamic table size update either, it is valid
/// for any table size the peer advertises, including 0.
#[derive(Debug, Default, Clone, Copy)]
pub struct Encoder;

/// Literal header field without indexing (§6.2.2), 4-bit index prefix.
const WITHOUT_INDEXING: u8 = 0x00;
/// Literal header field never indexed (§6.2.3), 4-bit index prefix.
const NEVER_INDEXED: u8 = 0x10;
/// Indexed header field (§6.1), 7-bit index prefix.
const INDEXED: u8 = 0x80;
/// Static index of `:status` (with value 200).
const STATUS_INDEX: usize = 8;

impl Encoder {
    /// Returns the encoder (a unit value; kept as a constructor so a stateful
    /// encoder could replace it without changing callers).
    pub fn new() -> Encoder {
        Encoder
    }

    /// Appends one field: an exact static-table match becomes an indexed field (1 octet for e.g. ":method: GET");
    /// a static-table name match becomes a literal with indexed name, without indexing; anything else a literal with literal name, without indexing.
    /// `sensitive` = true uses the "never indexed" representation instead of "without indexing".
    ///
    /// A sensitive field is never sent as an indexed field, even on an exact
    /// static match, so the "never indexed" mark always reaches the peer.
    /// Names must already be lowercase (HTTP/2); they are sent as given.
    pub fn encode(&mut self, name: &[u8], value: &[u8], sensitive: bool, dst: &mut Vec<u8>) {
        let flags = if sensitive {
            NEVER_INDEXED
        } else {
            WITHOUT_INDEXING
        };
        match static_table::find(name, value) {
            Some(m) if m.exact && !sensitive => dst.push(INDEXED | m.index),
            Some(m) => {
                dst.reserve(value.len() + 8);
                integer::encode(usize::from(m.index), 4, flags, dst);
                string(value, dst);
            }
            None => {
                dst.reserve(name.len() + value.len() + 11);
                dst.push(flags);
                string(name, dst);
                string(value, dst);
            }
        }
    }

    /// Appends `:status` (indexed for 200 204 206 304 400 404 500, else literal with indexed name 8).
    ///
    /// The literal is "without indexing". Any `u16` is written in decimal;
    /// valid HTTP statuses are three digits.
    pub fn encode_status(&mut self, status: u16, dst: &mut Vec<u8>) {
        let index: u8 = match status {
            200 => 8,
            204 => 9,
            206 => 10,
            304 => 11,
            400 => 12,
            404 => 13,
            500 => 14,
            _ => {
                let mut digits = [0u8; 5];
                let mut start = digits.len();
                let mut rest = status;
                // A u16 has at most 5 digits, so `start` never underflows.
                loop {
                    start -= 1;
                    digits[start] = b'0' + (rest % 10) as u8;
                    rest /= 10;
                    if rest == 0 {
                        break;
                    }
                }
                dst.reserve(7);
                integer::encode(STATUS_INDEX, 4, WITHOUT_INDEXING, dst);
                string(&digits[start..], dst);
                return;
            }
        };
        dst.push(INDEXED | index);
    }
}

/// Appends a raw (non-Huffman) string literal (§5.2).
#[inline]
fn string(s: &[u8], dst: &mut Vec<u8>) {
    integer::encode(s.len(), 7, 0, dst);
    dst.extend_from_slice(s);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(name: &str, value: &str, sensitive: bool) -> Vec<u8> {
        let mut out = Vec::new();
        Encoder::new().encode(name.as_bytes(), value.as_bytes(), sensitive, &mut out);
        out
    }

    fn status(code: u16) -> Vec<u8> {
        let mut out = Vec::new();
        Encoder::new().encode_status(code, &mut out);
        out
    }

    #[test]
    fn representations() {
        assert_eq!(enc(":method", "GET", false), [0x82]);
        assert_eq!(enc(":path", "/", false), [0x84]);
        assert_eq!(enc("accept-encoding", "gzip, deflate", false), [0x90]);
        // Exact match but sensitive: never-indexed literal with indexed name.
        assert_eq!(enc(":method", "GET", true), [0x12, 3, b'G', b'E', b'T']);
        // Name match: RFC 7541 C.2.2 is exactly this representation.
        assert_eq!(enc(":path", "/sample/path", false), b"\x04\x0c/sample/path");
        // Name index >= 15 needs a continuation octet in a 4-bit prefix.
        assert_eq!(enc("content-type", "a", false), [0x0f, 0x10, 1, b'a']);
        assert_eq!(enc("authorization", "x", true), [0x1f, 0x08, 1, b'x']);
        // Literal name: RFC 7541 C.2.3 is exactly this representation.
        assert_eq!(
            enc("password", "secret", true),
            b"\x10\x08password\x06secret"
        );
        assert_eq!(enc("x-a", "", false), b"\x00\x03x-a\x00");
    }

    #[test]
    fn long_value_length() {
        let value = "v".repeat(300);
        let out = enc("x", &value, false);
        // 300 = 127 + 173 -> 0x7f, 0xad, 0x01.
        assert_eq!(&out[..6], &[0x00, 0x01, b'x', 0x7f, 0xad, 0x01]);
        assert_eq!(out.len(), 6 + 300);
    }

    #[test]
    fn statuses() {
        assert_eq!(status(200), [0x88]);
        assert_eq!(status(204), [0x89]);
        assert_eq!(status(206), [0x8a]);
        assert_eq!(status(304), [0x8b]);
        assert_eq!(status(400), [0x8c]);
        assert_eq!(status(404), [0x8d]);
        assert_eq!(status(500), [0x8e]);
        assert_eq!(status(302), b"\x08\x03302");
        assert_eq!(status(0), b"\x08\x010");
        assert_eq!(status(u16::MAX), b"\x08\x0565535");
    }

    #[test]
    fn appends() {
        let mut out = vec![0xaa];
        let mut e = Encoder::new();
        e.encode_status(200, &mut out);
        e.encode(b":method", b"GET", false, &mut out);
        assert_eq!(out, [0xaa, 0x88, 0x82]);
    }
}
