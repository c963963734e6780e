//! HTTP/2 frames (RFC 9113 §4 and §6): the 9-octet header, the frame
//! types and flags, and writers that append whole frames to a
//! connection's output buffer; shared by the downstream server and the
//! upstream client.

/// Octets in a frame header.
pub const HEADER_LEN: usize = 9;

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The protocol's default and smallest SETTINGS_MAX_FRAME_SIZE.
pub const DEFAULT_MAX_FRAME: usize = 16_384;

/// The largest SETTINGS_MAX_FRAME_SIZE a peer may announce.
pub const MAX_MAX_FRAME: u32 = (1 << 24) - 1;

/// The largest flow-control window (2^31 - 1).
pub const MAX_WINDOW: i64 = (1 << 31) - 1;

/// The protocol's initial flow-control window for streams and connections.
pub const DEFAULT_WINDOW: i64 = 65_535;

/// Frame types (RFC 9113 §6).
pub mod kind {
    /// DATA.
    pub const DATA: u8 = 0x0;
    /// HEADERS.
    pub const HEADERS: u8 = 0x1;
    /// PRIORITY (deprecated; read and ignored).
    pub const PRIORITY: u8 = 0x2;
    /// RST_STREAM.
    pub const RST_STREAM: u8 = 0x3;
    /// SETTINGS.
    pub const SETTINGS: u8 = 0x4;
    /// PUSH_PROMISE (never valid from a client).
    pub const PUSH_PROMISE: u8 = 0x5;
    /// PING.
    pub const PING: u8 = 0x6;
    /// GOAWAY.
    pub const GOAWAY: u8 = 0x7;
    /// WINDOW_UPDATE.
    pub const WINDOW_UPDATE: u8 = 0x8;
    /// CONTINUATION.
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags.
pub mod flag {
    /// DATA and HEADERS: the sender's last frame on the stream.
    pub const END_STREAM: u8 = 0x1;
    /// SETTINGS and PING: an acknowledgement.
    pub const ACK: u8 = 0x1;
    /// HEADERS and CONTINUATION: the header block is complete.
    pub const END_HEADERS: u8 = 0x4;
    /// DATA and HEADERS: a pad length octet and padding are present.
    pub const PADDED: u8 = 0x8;
    /// HEADERS: a priority block (5 octets) is present.
    pub const PRIORITY: u8 = 0x20;
}

/// Error codes (RFC 9113 §7).
pub mod reason {
    /// Graceful end; also "stop sending" after a complete response.
    pub const NO_ERROR: u32 = 0x0;
    /// The peer broke the protocol.
    pub const PROTOCOL_ERROR: u32 = 0x1;
    /// The proxy failed (for example the response body broke).
    pub const INTERNAL_ERROR: u32 = 0x2;
    /// A window overflowed or was exceeded.
    pub const FLOW_CONTROL_ERROR: u32 = 0x3;
    /// A frame arrived for a stream that was closed.
    pub const STREAM_CLOSED: u32 = 0x5;
    /// A frame had the wrong size.
    pub const FRAME_SIZE_ERROR: u32 = 0x6;
    /// The stream was not processed (over the concurrency limit).
    pub const REFUSED_STREAM: u32 = 0x7;
    /// The stream is no longer needed.
    pub const CANCEL: u32 = 0x8;
    /// The header block could not be decoded.
    pub const COMPRESSION_ERROR: u32 = 0x9;
    /// The peer is generating excessive load.
    pub const ENHANCE_YOUR_CALM: u32 = 0xb;
}

/// The name of an error code, as RFC 9113 §7 spells it (the retry
/// policy's `refused-stream` looks for `REFUSED_STREAM`).
pub fn reason_name(code: u32) -> &'static str {
    const NAMES: [&str; 14] = [
        "NO_ERROR",
        "PROTOCOL_ERROR",
        "INTERNAL_ERROR",
        "FLOW_CONTROL_ERROR",
        "SETTINGS_TIMEOUT",
        "STREAM_CLOSED",
        "FRAME_SIZE_ERROR",
        "REFUSED_STREAM",
        "CANCEL",
        "COMPRESSION_ERROR",
        "CONNECT_ERROR",
        "ENHANCE_YOUR_CALM",
        "INADEQUATE_SECURITY",
        "HTTP_1_1_REQUIRED",
    ];
    NAMES.get(code as usize).copied().unwrap_or("UNKNOWN_ERROR")
}

/// The most an HPACK encoder of ours keeps in its dynamic table: the
/// protocol's default (a peer may ask for less), room for the fields sent
/// on every message, peer metadata above all.
pub const HPACK_TABLE: usize = 4096;

/// SETTINGS identifiers (RFC 9113 §6.5.2).
pub mod setting {
    /// SETTINGS_HEADER_TABLE_SIZE.
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    /// SETTINGS_ENABLE_PUSH.
    pub const ENABLE_PUSH: u16 = 0x2;
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    /// SETTINGS_INITIAL_WINDOW_SIZE.
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    /// SETTINGS_MAX_FRAME_SIZE.
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    /// SETTINGS_MAX_HEADER_LIST_SIZE.
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
}

/// A parsed frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// Payload length.
    pub len: usize,
    /// Frame type.
    pub kind: u8,
    /// Flags.
    pub flags: u8,
    /// Stream identifier (the reserved bit cleared).
    pub stream: u32,
}

impl Head {
    /// Reads a header from the first [`HEADER_LEN`] octets of `b`.
    pub fn parse(b: &[u8; HEADER_LEN]) -> Head {
        Head {
            len: (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    /// Whether `f` is set.
    pub fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }
}

/// Takes the next whole frame off the front of `buf`: its header and
/// payload, `Ok(None)` when more bytes are needed (room is reserved), or
/// `Err(())` when the frame is larger than `max` (FRAME_SIZE_ERROR).
#[allow(clippy::result_unit_err)]
pub fn take_frame(
    buf: &mut bytes::BytesMut,
    max: usize,
) -> Result<Option<(Head, bytes::Bytes)>, ()> {
    let Some(head) = buf.first_chunk::<HEADER_LEN>().map(Head::parse) else {
        return Ok(None);
    };
    if head.len > max {
        return Err(());
    }
    if buf.len() < HEADER_LEN + head.len {
        buf.reserve(HEADER_LEN + head.len - buf.len());
        return Ok(None);
    }
    let mut payload = buf.split_to(HEADER_LEN + head.len).freeze();
    let _ = payload.split_to(HEADER_LEN);
    Ok(Some((head, payload)))
}

/// Appends a frame header.
pub fn put_head(dst: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    let len = len as u32;
    dst.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    dst.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
}

/// Appends a SETTINGS frame carrying `values`.
pub fn put_settings(dst: &mut Vec<u8>, values: &[(u16, u32)]) {
    put_head(dst, values.len() * 6, kind::SETTINGS, 0, 0);
    for (id, v) in values {
        dst.extend_from_slice(&id.to_be_bytes());
        dst.extend_from_slice(&v.to_be_bytes());
    }
}

/// Appends a SETTINGS acknowledgement.
pub fn put_settings_ack(dst: &mut Vec<u8>) {
    put_head(dst, 0, kind::SETTINGS, flag::ACK, 0);
}

/// Appends a WINDOW_UPDATE granting `increment` octets.
pub fn put_window_update(dst: &mut Vec<u8>, stream: u32, increment: u32) {
    put_head(dst, 4, kind::WINDOW_UPDATE, 0, stream);
    dst.extend_from_slice(&(increment & 0x7fff_ffff).to_be_bytes());
}

/// Appends a RST_STREAM.
pub fn put_rst(dst: &mut Vec<u8>, stream: u32, reason: u32) {
    put_head(dst, 4, kind::RST_STREAM, 0, stream);
    dst.extend_from_slice(&reason.to_be_bytes());
}

/// Appends a GOAWAY naming the last stream the server will process.
pub fn put_goaway(dst: &mut Vec<u8>, last_stream: u32, reason: u32) {
    put_head(dst, 8, kind::GOAWAY, 0, 0);
    dst.extend_from_slice(&(last_stream & 0x7fff_ffff).to_be_bytes());
    dst.extend_from_slice(&reason.to_be_bytes());
}

/// Appends a PING.
pub fn put_ping(dst: &mut Vec<u8>, payload: &[u8; 8]) {
    put_head(dst, 8, kind::PING, 0, 0);
    dst.extend_from_slice(payload);
}

/// Appends the acknowledgement of a PING.
pub fn put_ping_ack(dst: &mut Vec<u8>, payload: &[u8]) {
    put_head(dst, payload.len(), kind::PING, flag::ACK, 0);
    dst.extend_from_slice(payload);
}

/// Appends `data` as DATA frames of at most `max_frame` octets; the last
/// carries END_STREAM when `end` (an empty `data` with `end` is one empty
/// frame).
pub fn put_data(dst: &mut Vec<u8>, stream: u32, data: &[u8], end: bool, max_frame: usize) {
    let mut rest = data;
    loop {
        let n = rest.len().min(max_frame);
        let last = n == rest.len();
        let flags = if last && end { flag::END_STREAM } else { 0 };
        put_head(dst, n, kind::DATA, flags, stream);
        dst.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        if last {
            return;
        }
    }
}

/// Frames the header block that was appended to `dst` after offset
/// `start + HEADER_LEN` (the caller reserved a header's room at `start`):
/// one HEADERS frame, or HEADERS and CONTINUATION frames when the block is
/// larger than `max_frame`.
pub fn finish_headers(dst: &mut Vec<u8>, start: usize, stream: u32, end: bool, max_frame: usize) {
    let block_len = dst.len() - start - HEADER_LEN;
    let end_flag = if end { flag::END_STREAM } else { 0 };
    if block_len <= max_frame {
        let mut head = Vec::with_capacity(HEADER_LEN);
        put_head(
            &mut head,
            block_len,
            kind::HEADERS,
            end_flag | flag::END_HEADERS,
            stream,
        );
        dst[start..start + HEADER_LEN].copy_from_slice(&head);
        return;
    }
    let block = dst.split_off(start + HEADER_LEN);
    dst.truncate(start);
    let mut chunks = block.chunks(max_frame).peekable();
    let mut kind = kind::HEADERS;
    let mut flags = end_flag;
    while let Some(chunk) = chunks.next() {
        if chunks.peek().is_none() {
            flags |= flag::END_HEADERS;
        }
        put_head(dst, chunk.len(), kind, flags, stream);
        dst.extend_from_slice(chunk);
        kind = kind::CONTINUATION;
        flags = 0;
    }
}

/// Removes a padded frame's padding (RFC 9113 §6.1): the payload without
/// the pad length octet and the padding, or `None` when the padding is
/// longer than the payload.
pub fn strip_padding(payload: &[u8], padded: bool) -> Option<std::ops::Range<usize>> {
    if !padded {
        return Some(0..payload.len());
    }
    let pad = usize::from(*payload.first()?);
    let end = payload.len().checked_sub(pad)?;
    (end >= 1).then_some(1..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_survives_the_round_trip() {
        let mut b = Vec::new();
        put_head(&mut b, 0x01_02_03, kind::HEADERS, 0x25, 0x8000_0007);
        let h = Head::parse(b[..9].try_into().unwrap());
        assert_eq!(
            h,
            Head {
                len: 0x01_02_03,
                kind: kind::HEADERS,
                flags: 0x25,
                stream: 7
            }
        );
        assert!(h.has(flag::END_STREAM) && h.has(flag::PRIORITY) && !h.has(flag::PADDED));
    }

    #[test]
    fn data_is_split_at_the_frame_size_and_only_the_last_ends_the_stream() {
        let mut b = Vec::new();
        put_data(&mut b, 3, &[7u8; 25], true, 10);
        let mut flags = Vec::new();
        let mut at = 0;
        while at < b.len() {
            let h = Head::parse(b[at..at + 9].try_into().unwrap());
            flags.push((h.len, h.flags));
            at += 9 + h.len;
        }
        assert_eq!(flags, [(10, 0), (10, 0), (5, flag::END_STREAM)]);
        let mut e = Vec::new();
        put_data(&mut e, 3, &[], true, 10);
        assert_eq!(e.len(), 9);
    }

    #[test]
    fn a_large_header_block_continues_in_continuation_frames() {
        let mut b = vec![0xaa];
        let start = b.len();
        b.extend_from_slice(&[0; HEADER_LEN]);
        b.extend_from_slice(&[1u8; 25]);
        finish_headers(&mut b, start, 5, true, 10);
        assert_eq!(b[0], 0xaa);
        let mut frames = Vec::new();
        let mut at = 1;
        while at < b.len() {
            let h = Head::parse(b[at..at + 9].try_into().unwrap());
            frames.push((h.kind, h.flags, h.len));
            at += 9 + h.len;
        }
        assert_eq!(
            frames,
            [
                (kind::HEADERS, flag::END_STREAM, 10),
                (kind::CONTINUATION, 0, 10),
                (kind::CONTINUATION, flag::END_HEADERS, 5)
            ]
        );
    }

    #[test]
    fn whole_frames_are_taken_and_partial_or_oversized_ones_are_not() {
        let mut wire = Vec::new();
        put_ping_ack(&mut wire, b"12345678");
        put_rst(&mut wire, 3, reason::CANCEL);
        let mut buf = bytes::BytesMut::from(&wire[..20]);
        let (head, payload) = take_frame(&mut buf, 16).unwrap().unwrap();
        assert_eq!((head.kind, &payload[..]), (kind::PING, &b"12345678"[..]));
        assert_eq!(take_frame(&mut buf, 16), Ok(None), "3 of 13 octets");
        buf.extend_from_slice(&wire[20..]);
        let (head, payload) = take_frame(&mut buf, 16).unwrap().unwrap();
        assert_eq!(
            (head.kind, head.stream, payload.len()),
            (kind::RST_STREAM, 3, 4)
        );
        assert!(buf.is_empty());
        let mut big = bytes::BytesMut::new();
        big.extend_from_slice(&wire[..9]);
        assert_eq!(
            take_frame(&mut big, 4),
            Err(()),
            "8 octets over a limit of 4"
        );
    }

    #[test]
    fn padding_is_removed_and_overlong_padding_is_refused() {
        assert_eq!(strip_padding(&[2, 9, 9, 0, 0], true), Some(1..3));
        assert_eq!(strip_padding(&[5, 9], true), None);
        assert_eq!(strip_padding(&[], true), None);
        assert_eq!(strip_padding(&[9, 9], false), Some(0..2));
    }
}
