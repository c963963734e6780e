//! HPACK's static Huffman code (RFC 7541 §5.2, Appendix B).
//!
//! The decoder runs a state machine over the code tree (built and checked
//! at compile time a nibble per step, widened to an octet per step on first
//! use) and rejects everything RFC 7541 §5.2 calls a decoding error: EOS
//! inside the string, padding longer than 7 bits, and padding that is not all
//! 1s. The
//! encoder is for tests and for future senders; Meshwork's [`crate::Encoder`]
//! does not Huffman-encode.

mod codes;
mod machine;
#[cfg(test)]
mod tests;

use crate::Error;
use codes::CODES;
use machine::{
    BYTE_COUNT_SHIFT, BYTE_FAIL, BYTE_NEXT_MASK, BYTE_SYM1_SHIFT, BYTE_SYM2_SHIFT, MACHINE,
    byte_table,
};

/// Appends the Huffman encoding of `src` (for tests and for future senders).
///
/// The last octet is padded with the most significant bits of EOS (1s).
pub fn encode(src: &[u8], dst: &mut Vec<u8>) {
    dst.reserve(encoded_len(src));
    let mut acc: u64 = 0;
    let mut bits: u32 = 0;
    for &byte in src {
        let (code, len) = CODES[usize::from(byte)];
        // `bits` < 8 here and codes are <= 30 bits, so nothing is lost.
        acc = (acc << len) | u64::from(code);
        bits += u32::from(len);
        while bits >= 8 {
            bits -= 8;
            dst.push((acc >> bits) as u8);
        }
    }
    if bits > 0 {
        dst.push(((acc << (8 - bits)) as u8) | (0xff >> bits));
    }
}

/// Returns the number of octets [`encode`] would append for `src`, so
/// senders can choose between Huffman and raw without encoding twice.
pub fn encoded_len(src: &[u8]) -> usize {
    let bits: u64 = src
        .iter()
        .map(|&b| u64::from(CODES[usize::from(b)].1))
        .sum();
    bits.div_ceil(8) as usize
}

/// Appends the decoding of `src` to `dst`.
///
/// On error `dst` is left as it was.
pub fn decode(src: &[u8], dst: &mut Vec<u8>) -> Result<(), crate::Error> {
    let table = byte_table();
    // Every symbol takes at least 5 bits, so after `i` input octets at most
    // floor(8i/5) symbols were written; 2 spare octets let every step store
    // both symbol slots unconditionally (no branch per symbol).
    let start = dst.len();
    let max_out = src.len() / 5 * 8 + src.len() % 5 * 8 / 5;
    dst.resize(start + max_out + 2, 0);
    let out = &mut dst[start..];
    let mut written = 0;
    let mut state = 0u8;
    let mut seen = 0u32;
    for &octet in src {
        let e = table[usize::from(u16::from(state) << 8 | u16::from(octet))];
        // Always in bounds by the sizing above.
        if let Some([a, b]) = out.get_mut(written..written + 2) {
            *a = (e >> BYTE_SYM1_SHIFT) as u8;
            *b = (e >> BYTE_SYM2_SHIFT) as u8;
        }
        written += ((e >> BYTE_COUNT_SHIFT) & 3) as usize;
        seen |= e;
        state = (e & BYTE_NEXT_MASK) as u8;
    }
    // EOS restarts at the root, so one check at the end is enough.
    if seen & BYTE_FAIL != 0 || !MACHINE.accept[usize::from(state)] {
        dst.truncate(start);
        return Err(Error::InvalidHuffman);
    }
    dst.truncate(start + written);
    Ok(())
}
