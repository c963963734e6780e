//! The HPACK static table (RFC 7541 Appendix A) and O(1) lookups into it.
//!
//! Decoding indexes the array directly; encoding finds a name through a
//! per-length bucket table built at compile time, then compares at most a
//! handful of candidates.

/// Number of entries in the static table; dynamic indices start after it.
pub const LEN: usize = 61;

/// RFC 7541 Appendix A, in order: entry `i` (1-based) is `TABLE[i - 1]`.
static TABLE: [(&[u8], &[u8]); LEN] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// Returns the `(name, value)` of static entry `index` (1..=61), or `None`
/// for 0 and anything past the table. Used by the decoder and by callers that
/// map [`crate::Field::static_index`] back to a name.
#[inline]
pub fn get(index: usize) -> Option<(&'static [u8], &'static [u8])> {
    TABLE.get(index.wrapping_sub(1)).copied()
}

/// The result of looking a field up in the static table for encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    /// The first index with this name, or the exact entry when `exact`.
    pub index: u8,
    /// Name and value both match, so the field is a single indexed octet.
    pub exact: bool,
}

/// Finds `name` (and, if possible, `name` + `value`) in the static table, so
/// the encoder can use an indexed field or an indexed name. Names are compared
/// byte for byte (HTTP/2 names are lowercase). Allocation-free and O(1): at
/// most six same-length names are compared.
pub fn find(name: &[u8], value: &[u8]) -> Option<Match> {
    let bucket = BY_LEN.get(name.len())?;
    for &first in bucket {
        let first = usize::from(first);
        if first == 0 {
            return None;
        }
        if !same(TABLE.get(first - 1)?.0, name) {
            continue;
        }
        // Entries sharing a name are adjacent; look for an exact value.
        let mut index = first;
        while let Some(&(n, v)) = TABLE.get(index - 1) {
            if !same(n, name) {
                break;
            }
            if same(v, value) {
                return Some(Match {
                    index: index as u8,
                    exact: true,
                });
            }
            index += 1;
        }
        return Some(Match {
            index: first as u8,
            exact: false,
        });
    }
    None
}

/// Longest static-table name (`access-control-allow-origin`).
const MAX_NAME_LEN: usize = 27;
/// Most distinct names sharing one length is 6 (lengths 4, 7 and 13).
const BUCKET: usize = 8;

/// `BY_LEN[len]` lists the first index of each distinct name of length `len`,
/// zero-terminated.
static BY_LEN: [[u8; BUCKET]; MAX_NAME_LEN + 1] = by_len();

const fn by_len() -> [[u8; BUCKET]; MAX_NAME_LEN + 1] {
    let mut out = [[0u8; BUCKET]; MAX_NAME_LEN + 1];
    let mut i = 0;
    while i < LEN {
        let name = TABLE[i].0;
        if i == 0 || !bytes_eq(TABLE[i - 1].0, name) {
            let bucket = &mut out[name.len()];
            let mut k = 0;
            // Overrunning the bucket fails the build, not a run.
            while bucket[k] != 0 {
                k += 1;
            }
            bucket[k] = (i + 1) as u8;
        }
        i += 1;
    }
    out
}

/// Byte equality that rejects on the length, then on the first and last
/// octets, before comparing the rest: a lookup's candidates share a length
/// and nearly always differ at one end, and a full comparison is a
/// `memcmp` call.
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.first() == b.first() && a.last() == b.last() && a == b
}

const fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_bounds() {
        assert_eq!(get(0), None);
        assert_eq!(get(1), Some((&b":authority"[..], &b""[..])));
        assert_eq!(get(2), Some((&b":method"[..], &b"GET"[..])));
        assert_eq!(
            get(16),
            Some((&b"accept-encoding"[..], &b"gzip, deflate"[..]))
        );
        assert_eq!(get(61), Some((&b"www-authenticate"[..], &b""[..])));
        assert_eq!(get(62), None);
        assert_eq!(get(usize::MAX), None);
    }

    #[test]
    fn find_every_entry() {
        for index in 1..=LEN {
            let (name, value) = get(index).unwrap();
            let m = find(name, value).unwrap();
            assert!(m.exact, "{index}");
            // The first entry with this name and value (":authority" "" is 1).
            let first_exact = (1..=LEN).find(|&i| get(i) == Some((name, value))).unwrap();
            assert_eq!(usize::from(m.index), first_exact);
            let first_name = (1..=LEN).find(|&i| get(i).unwrap().0 == name).unwrap();
            let m = find(name, b"\xffnot-a-static-value").unwrap();
            assert_eq!(
                m,
                Match {
                    index: first_name as u8,
                    exact: false
                }
            );
        }
    }

    #[test]
    fn find_misses() {
        assert_eq!(find(b"", b""), None);
        assert_eq!(find(b"x-request-id", b"1"), None);
        assert_eq!(find(b"Content-Type", b""), None);
        assert_eq!(find(&[b'a'; 300], b""), None);
        assert_eq!(
            find(b":status", b"302"),
            Some(Match {
                index: 8,
                exact: false
            })
        );
        assert_eq!(
            find(b":method", b"POST"),
            Some(Match {
                index: 3,
                exact: true
            })
        );
    }
}
