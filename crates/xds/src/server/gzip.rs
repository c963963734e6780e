//! gRPC gzip for shared state-of-the-world bodies, compressed once per set.
//!
//! A response is the set's shared fields followed by a few per-stream
//! fields (`version_info`, `nonce`; protobuf reads fields in any order). A
//! gzip member is a header, deflate blocks and a trailer (CRC-32 and length
//! of the whole plain text), so the shared part is deflated once, ending
//! in a sync flush (byte-aligned, not the last block), and each stream adds
//! a 10-byte gzip header, one final *stored* block holding its own fields,
//! and the trailer, whose CRC continues from the shared part's CRC. The
//! result is one ordinary gzip member that any gRPC peer inflates (Envoy,
//! grpcio, tonic). flate2 does the deflating; only this framing is ours,
//! because no crate splices a per-stream tail onto a shared deflate stream.

use bytes::Bytes;
use flate2::{Compress, Compression, FlushCompress, Status};

/// Deflate level: the fastest; route tables are repetitive, so level 1
/// already gains most of the ratio (see `bench/scale.md`).
pub(crate) const LEVEL: u32 = 1;
/// Bodies smaller than this are sent plain (not worth a gzip frame).
pub(crate) const MIN_BODY: usize = 256;

/// gzip member header: magic, deflate, no flags, no mtime, no extra flags,
/// unknown OS.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
/// Largest stored block payload.
const MAX_STORED: usize = u16::MAX as usize;

/// A shared body deflated once: raw deflate blocks ending byte-aligned and
/// not final, with the plain text's CRC-32 and length.
#[derive(Clone, Debug)]
pub(crate) struct Deflated {
    blocks: Bytes,
    crc: u32,
    plain_len: usize,
}

impl Deflated {
    /// Deflates `plain` (level [`LEVEL`], sync flush at the end). `None`
    /// when it is too small to be worth it or does not get smaller.
    pub(crate) fn new(plain: &[u8]) -> Option<Self> {
        if plain.len() < MIN_BODY {
            return None;
        }
        let mut c = Compress::new(Compression::new(LEVEL), false);
        let mut out = Vec::with_capacity(plain.len() / 4 + 64);
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(4096));
            }
            let consumed = usize::try_from(c.total_in()).ok()?;
            let status = c
                .compress_vec(&plain[consumed..], &mut out, FlushCompress::Sync)
                .ok()?;
            let done = usize::try_from(c.total_in()).ok()? == plain.len();
            // A sync flush is complete once all input is in and the output
            // buffer was not filled.
            if done && out.len() < out.capacity() || status == Status::StreamEnd {
                break;
            }
        }
        if out.len() + GZIP_HEADER.len() + 13 >= plain.len() {
            return None;
        }
        out.shrink_to_fit();
        let mut crc = crc32fast::Hasher::new();
        crc.update(plain);
        Some(Deflated {
            blocks: Bytes::from(out),
            crc: crc.finalize(),
            plain_len: plain.len(),
        })
    }

    /// Length of the shared deflate blocks.
    pub(crate) fn len(&self) -> usize {
        self.blocks.len()
    }

    /// One stream's gzip member of the shared body followed by `own`
    /// (the stream's fields): the gzip header, the shared blocks and this
    /// stream's tail (final stored block with `own`, CRC-32, length).
    /// `None` if `own` does not fit one stored block.
    pub(crate) fn member(&self, own: &[u8]) -> Option<(Bytes, Bytes, Bytes)> {
        if own.len() > MAX_STORED {
            return None;
        }
        let stored_len = own.len() as u16;
        let mut crc = crc32fast::Hasher::new_with_initial(self.crc);
        crc.update(own);
        let total = (self.plain_len as u64 + own.len() as u64) as u32; // ISIZE is mod 2^32
        let mut tail = Vec::with_capacity(5 + own.len() + 8);
        tail.push(0x01); // BFINAL=1, BTYPE=00 (stored); we are byte-aligned
        tail.extend_from_slice(&stored_len.to_le_bytes());
        tail.extend_from_slice(&(!stored_len).to_le_bytes());
        tail.extend_from_slice(own);
        tail.extend_from_slice(&crc.finalize().to_le_bytes());
        tail.extend_from_slice(&total.to_le_bytes());
        Some((
            Bytes::from_static(&GZIP_HEADER),
            self.blocks.clone(),
            Bytes::from(tail),
        ))
    }
}

/// Whether a `grpc-accept-encoding` header value lists gzip.
pub(crate) fn accepts_gzip(value: &[u8]) -> bool {
    value
        .split(|b| *b == b',')
        .any(|e| e.trim_ascii().eq_ignore_ascii_case(b"gzip"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn inflate(parts: &[Bytes]) -> Vec<u8> {
        let all: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(all.as_slice())
            .read_to_end(&mut out)
            .expect("a valid gzip member");
        out
    }

    fn body(n: usize) -> Vec<u8> {
        (0..n)
            .flat_map(|i| format!("vhost-{}.svc.cluster.local:8080;", i % 97).into_bytes())
            .collect()
    }

    /// Every stream's member inflates to the shared body plus its own
    /// fields; the shared blocks are the same bytes for all of them.
    #[test]
    fn members_inflate_to_shared_plus_own() {
        let plain = body(5000);
        let d = Deflated::new(&plain).expect("compressible");
        assert!(d.len() < plain.len() / 4, "{} of {}", d.len(), plain.len());
        for own in [&b""[..], b"\x0a\x10abcdef0123456789\x2a\x017", &[7u8; 300]] {
            let (head, shared, tail) = d.member(own).unwrap();
            assert_eq!(shared.as_ptr(), d.blocks.as_ptr(), "shared, not copied");
            let mut want = plain.clone();
            want.extend_from_slice(own);
            assert_eq!(inflate(&[head, shared, tail]), want);
        }
        assert!(d.member(&vec![0; MAX_STORED + 1]).is_none());
    }

    /// Large bodies need several output buffers; still one valid member.
    #[test]
    fn large_and_incompressible_bodies() {
        let plain = body(100_000);
        let d = Deflated::new(&plain).unwrap();
        let (h, s, t) = d.member(b"xy").unwrap();
        assert_eq!(inflate(&[h, s, t]).len(), plain.len() + 2);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..10_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        assert!(Deflated::new(&noise).is_none(), "does not get smaller");
        assert!(Deflated::new(b"tiny").is_none());
    }

    #[test]
    fn accept_encoding_lists() {
        assert!(accepts_gzip(b"identity,deflate,gzip"));
        assert!(accepts_gzip(b"gzip"));
        assert!(accepts_gzip(b" identity , GZIP "));
        assert!(!accepts_gzip(b"identity,deflate"));
        assert!(!accepts_gzip(b""));
        assert!(!accepts_gzip(b"gzipx"));
    }
}
