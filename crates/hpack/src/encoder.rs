//! Header encoding: the static table, raw literals, and (when asked for)
//! a dynamic table of the fields that repeat.

use std::collections::VecDeque;

use crate::{integer, static_table};

/// Encodes header blocks. Never Huffman-encodes (cheapest on CPU; RFC 7541
/// allows it).
///
/// [`Encoder::new`] is stateless: it never uses or changes the dynamic
/// table, so it is valid for any table size the peer advertises, including
/// 0. [`Encoder::with_table`] also indexes the fields that repeat (peer
/// metadata, user agents, authorities), so they cost one or two octets
/// after their first block; it must then see every block's start
/// ([`Encoder::begin_block`]) and the peer's SETTINGS_HEADER_TABLE_SIZE
/// ([`Encoder::set_peer_table_size`]), and every block it encodes must
/// reach the peer, in order.
#[derive(Debug, Default, Clone)]
pub struct Encoder {
    /// Newest first: name and value in one slice, and the name's length.
    table: VecDeque<(Box<[u8]>, usize)>,
    /// §4.1 size of the entries.
    size: usize,
    /// The table's maximum size, as the peer's decoder knows it.
    capacity: usize,
    /// The most this encoder uses (0: stateless).
    limit: usize,
    /// Size updates owed at the start of the next block: the smallest
    /// since the last block, and the last (§4.2).
    update: Option<(usize, usize)>,
}

/// Literal header field without indexing (§6.2.2), 4-bit index prefix.
const WITHOUT_INDEXING: u8 = 0x00;
/// Literal header field never indexed (§6.2.3), 4-bit index prefix.
const NEVER_INDEXED: u8 = 0x10;
/// Literal header field with incremental indexing (§6.2.1), 6-bit prefix.
const WITH_INDEXING: u8 = 0x40;
/// Dynamic table size update (§6.3), 5-bit prefix.
const SIZE_UPDATE: u8 = 0x20;
/// Indexed header field (§6.1), 7-bit index prefix.
const INDEXED: u8 = 0x80;
/// Static index of `:status` (with value 200).
const STATUS_INDEX: usize = 8;
/// The table size every HTTP/2 decoder starts with (RFC 9113 §6.5.2).
const DEFAULT_TABLE_SIZE: usize = 4096;
/// Per-entry overhead in the §4.1 size accounting.
const ENTRY_OVERHEAD: usize = 32;

/// Fields whose values rarely repeat (per-request ids, tracing context,
/// deadlines, lengths, dates): indexing them would only evict entries that
/// do, and lengthen every lookup.
fn rarely_repeats(name: &[u8]) -> bool {
    matches!(
        name,
        b":path"
            | b"content-length"
            | b"date"
            | b"age"
            | b"etag"
            | b"location"
            | b"referer"
            | b"range"
            | b"if-match"
            | b"if-range"
            | b"if-modified-since"
            | b"if-unmodified-since"
            | b"if-none-match"
            | b"cookie"
            | b"set-cookie"
            | b"grpc-timeout"
            | b"grpc-trace-bin"
            | b"traceparent"
            | b"tracestate"
            | b"b3"
            | b"x-b3-traceid"
            | b"x-b3-spanid"
            | b"x-b3-parentspanid"
            | b"x-ot-span-context"
            | b"uber-trace-id"
            | b"sentry-trace"
            | b"x-client-trace-id"
            | b"x-amzn-trace-id"
            | b"x-cloud-trace-context"
            | b"x-datadog-trace-id"
            | b"x-datadog-parent-id"
            | b"x-envoy-attempt-count"
            | b"x-envoy-expected-rq-timeout-ms"
            | b"x-envoy-original-path"
            | b"x-envoy-upstream-service-time"
    )
}

/// Credentials: always sent "never indexed" (RFC 7541 §7.1.3), so no
/// intermediary's table holds them.
fn always_sensitive(name: &[u8]) -> bool {
    matches!(name, b"authorization" | b"proxy-authorization")
}

impl Encoder {
    /// A stateless encoder (static table and literals only).
    pub fn new() -> Encoder {
        Encoder::default()
    }

    /// An encoder that indexes repeating fields in a dynamic table of at
    /// most `limit` octets (and at most what the peer allows).
    pub fn with_table(limit: usize) -> Encoder {
        let mut e = Encoder {
            capacity: DEFAULT_TABLE_SIZE,
            limit,
            ..Encoder::default()
        };
        e.resize(limit.min(DEFAULT_TABLE_SIZE));
        e
    }

    /// The peer's SETTINGS_HEADER_TABLE_SIZE: the table shrinks to it (or
    /// to this encoder's limit), and the next block says so.
    pub fn set_peer_table_size(&mut self, size: usize) {
        if self.limit > 0 {
            self.resize(size.min(self.limit));
        }
    }

    fn resize(&mut self, capacity: usize) {
        if capacity == self.capacity {
            return;
        }
        self.capacity = capacity;
        self.evict(0);
        let smallest = self.update.map_or(capacity, |(s, _)| s.min(capacity));
        self.update = Some((smallest, capacity));
    }

    /// Starts a header block: writes the table size updates owed (§4.2).
    /// An encoder with a table needs it at the start of every block.
    pub fn begin_block(&mut self, dst: &mut Vec<u8>) {
        if let Some((smallest, last)) = self.update.take() {
            if smallest < last {
                integer::encode(smallest, 5, SIZE_UPDATE, dst);
            }
            integer::encode(last, 5, SIZE_UPDATE, dst);
        }
    }

    /// Makes room for `incoming` octets, oldest entries first.
    fn evict(&mut self, incoming: usize) {
        while self.size + incoming > self.capacity {
            let Some((bytes, _)) = self.table.pop_back() else {
                break;
            };
            self.size -= bytes.len() + ENTRY_OVERHEAD;
        }
    }

    /// The dynamic index (62 for the newest) of an exact entry.
    fn find(&self, name: &[u8], value: &[u8]) -> Option<usize> {
        let total = name.len() + value.len();
        self.table
            .iter()
            .position(|(bytes, name_len)| {
                *name_len == name.len()
                    && bytes.len() == total
                    && bytes[name.len()..] == *value
                    && bytes[..name.len()] == *name
            })
            .map(|i| static_table::LEN + 1 + i)
    }

    /// Adds an entry of §4.1 `size`, evicting what it needs.
    fn insert(&mut self, name: &[u8], value: &[u8], size: usize) {
        self.evict(size);
        self.table
            .push_front(([name, value].concat().into_boxed_slice(), name.len()));
        self.size += size;
    }

    /// Appends one field: an exact static-table match becomes an indexed
    /// field (1 octet for e.g. ":method: GET"), as does an exact match in
    /// the dynamic table (1-2 octets). Otherwise a literal, with the
    /// static table's index for the name when it has one: "with
    /// incremental indexing" when this encoder has a table and the field
    /// is worth keeping there (at most three quarters of the table, and
    /// its name is not one whose values rarely repeat), else "without
    /// indexing", or "never indexed" when `sensitive` (always for
    /// `authorization` and `proxy-authorization`).
    ///
    /// A sensitive field is never indexed, not even on an exact static
    /// match, so the "never indexed" mark always reaches the peer.
    /// Names must already be lowercase (HTTP/2); they are sent as given.
    pub fn encode(&mut self, name: &[u8], value: &[u8], sensitive: bool, dst: &mut Vec<u8>) {
        let sensitive = sensitive || always_sensitive(name);
        let flags = if sensitive {
            NEVER_INDEXED
        } else {
            WITHOUT_INDEXING
        };
        let found = static_table::find(name, value);
        if let Some(m) = found
            && m.exact
            && !sensitive
        {
            dst.push(INDEXED | m.index);
            return;
        }
        if !sensitive && self.capacity > 0 {
            if let Some(index) = self.find(name, value) {
                integer::encode(index, 7, INDEXED, dst);
                return;
            }
            // An entry near the table's size would evict everything else
            // for itself (one larger would empty the peer's table, §4.4).
            let size = name.len() + value.len() + ENTRY_OVERHEAD;
            if size <= self.capacity / 4 * 3 && !rarely_repeats(name) {
                literal(found, 6, WITH_INDEXING, name, value, dst);
                self.insert(name, value, size);
                return;
            }
        }
        literal(found, 4, flags, name, value, dst);
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

/// Appends a literal field (§6.2): `flags` and, in its `prefix`-bit
/// integer, the static table's index for the name when it has one (else
/// 0 and the name itself), then the value.
fn literal(
    found: Option<static_table::Match>,
    prefix: u32,
    flags: u8,
    name: &[u8],
    value: &[u8],
    dst: &mut Vec<u8>,
) {
    dst.reserve(name.len() + value.len() + 11);
    match found {
        Some(m) => integer::encode(usize::from(m.index), prefix, flags, dst),
        None => {
            dst.push(flags);
            string(name, dst);
        }
    }
    string(value, dst);
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
        // Credentials are never indexed, whatever the caller says.
        assert_eq!(enc("authorization", "x", false), [0x1f, 0x08, 1, b'x']);
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

    /// Decodes `block` with `dec`, as (name, value) strings.
    fn decode(dec: &mut crate::Decoder, block: &[u8]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        dec.decode(block, |f| {
            out.push((
                String::from_utf8_lossy(f.name).into_owned(),
                String::from_utf8_lossy(f.value).into_owned(),
            ))
        })
        .unwrap();
        out
    }

    fn block(e: &mut Encoder, fields: &[(&str, &str, bool)]) -> Vec<u8> {
        let mut out = Vec::new();
        e.begin_block(&mut out);
        for (n, v, s) in fields {
            e.encode(n.as_bytes(), v.as_bytes(), *s, &mut out);
        }
        out
    }

    fn owned(fields: &[(&str, &str, bool)]) -> Vec<(String, String)> {
        fields
            .iter()
            .map(|(n, v, _)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn repeated_fields_become_indexed_and_decode_the_same() {
        let peer = "p".repeat(400);
        let fields = [
            (":method", "POST", false),
            (":authority", "backend:8080", false),
            (":path", "/a", false),
            ("x-envoy-peer-metadata", peer.as_str(), false),
            ("x-request-id", "7f0c", true),
            ("content-length", "1024", false),
        ];
        let mut e = Encoder::with_table(4096);
        let mut d = crate::Decoder::new(4096);
        let first = block(&mut e, &fields);
        assert!(first.len() > 400);
        assert_eq!(decode(&mut d, &first), owned(&fields));
        let second = block(&mut e, &fields);
        // :method static (1), authority and peer metadata indexed (1
        // each), :path with the static name (4), the request id never
        // indexed (19), the length without indexing (7).
        assert_eq!(second.len(), 1 + 1 + 4 + 1 + 19 + 7, "{second:x?}");
        assert_eq!(decode(&mut d, &second), owned(&fields));
        // The stateless encoder sends everything every time.
        let mut stateless = Encoder::new();
        assert!(block(&mut stateless, &fields).len() > 400);
        assert!(block(&mut stateless, &fields).len() > 400);
    }

    #[test]
    fn ids_credentials_and_outsized_values_stay_out_of_the_table() {
        let big = "b".repeat(3100);
        let fields = [
            (
                "traceparent",
                "00-4bf92f3577b34da6-00f067aa0ba902b7-01",
                false,
            ),
            ("authorization", "Bearer t", false),
            ("x-big", big.as_str(), false),
        ];
        let mut e = Encoder::with_table(4096);
        let mut d = crate::Decoder::new(4096);
        let first = block(&mut e, &fields);
        let second = block(&mut e, &fields);
        assert_eq!(first, second, "nothing was indexed");
        assert_eq!(decode(&mut d, &second), owned(&fields));
        assert_eq!(d.table_len(), 0);
    }

    #[test]
    fn a_peer_that_lowers_its_table_size_gets_an_update_and_stays_in_sync() {
        let mut e = Encoder::with_table(4096);
        let mut d = crate::Decoder::new(4096);
        let fields = [("x-a", "1", false), ("x-b", "2", false)];
        decode(&mut d, &block(&mut e, &fields));
        // The peer lowers to 0, then to 64, before the next block: both
        // updates (the smallest first) open it, and only 64 octets are
        // used from then on.
        d.set_max_table_size(64);
        e.set_peer_table_size(0);
        e.set_peer_table_size(64);
        let next = block(&mut e, &fields);
        assert_eq!(&next[..3], &[0x20, 0x3f, 64 - 31], "{next:x?}");
        assert_eq!(decode(&mut d, &next), owned(&fields));
        assert_eq!(decode(&mut d, &block(&mut e, &fields)), owned(&fields));
        // An encoder with a smaller limit says so in its first block.
        let mut small = Encoder::with_table(100);
        let mut d = crate::Decoder::new(4096);
        let first = block(&mut small, &fields);
        assert_eq!(first[0], 0x3f, "size update to 100 first: {first:x?}");
        assert_eq!(decode(&mut d, &first), owned(&fields));
    }

    #[test]
    fn random_blocks_round_trip_through_eviction() {
        // A deterministic mix of repeating and fresh fields through a
        // small table, so entries are evicted all the time.
        let mut e = Encoder::with_table(256);
        let mut d = crate::Decoder::new(4096);
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..500 {
            let mut fields = Vec::new();
            for _ in 0..(seed % 7) {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let name = format!("x-{}", seed % 5);
                let value = "v".repeat((seed >> 8) as usize % 90) + &(seed % 11).to_string();
                fields.push((name, value, seed.is_multiple_of(13)));
            }
            if round % 97 == 0 {
                d.set_max_table_size(4096);
                e.set_peer_table_size((seed % 300) as usize);
            }
            let refs: Vec<(&str, &str, bool)> = fields
                .iter()
                .map(|(n, v, s)| (n.as_str(), v.as_str(), *s))
                .collect();
            let got = decode(&mut d, &block(&mut e, &refs));
            assert_eq!(got, owned(&refs), "round {round}");
        }
    }
}
