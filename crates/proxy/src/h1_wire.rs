//! HTTP/1.1 wire pieces both of the proxy's own codecs write and read: the
//! downstream fast path (`http::h1_head`) and the upstream exchange
//! (`upstream_h1_codec`, `upstream_h1_parse`).

use bytes::BufMut;

/// Appends one `name: value` header line.
pub fn put_field(out: &mut impl BufMut, name: &[u8], value: &[u8]) {
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

/// Appends a `content-length` line, the number written without allocating.
pub fn put_length(out: &mut impl BufMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    put_field(out, b"content-length", &digits[at..]);
}

/// Appends one chunk of a chunked body (nothing for empty data, which
/// would read as the last chunk).
pub fn put_chunk(out: &mut impl BufMut, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    let mut n = data.len();
    loop {
        at -= 1;
        digits[at] = b"0123456789abcdef"[n % 16];
        n /= 16;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[at..]);
    out.put_slice(b"\r\n");
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

/// Whether a comma-separated header value (`Connection`) lists `token`.
pub fn lists(value: &[u8], token: &str) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_chunks_are_framed() {
        let mut out = Vec::new();
        put_field(&mut out, b"x-a", b"1");
        put_length(&mut out, 0);
        put_length(&mut out, 1024);
        put_chunk(&mut out, b"");
        put_chunk(&mut out, &[b'a'; 26]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                "x-a: 1\r\ncontent-length: 0\r\ncontent-length: 1024\r\n1a\r\n{}\r\n",
                "a".repeat(26)
            )
        );
        assert!(lists(b"keep-alive, Close", "close"));
        assert!(!lists(b"closed", "close"));
    }
}
