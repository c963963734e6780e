//! Integration tests for meshwork-hpack, one binary (see the modules).

mod garbage;
mod malformed;
mod rfc_examples;
mod roundtrip;

use meshwork_hpack::{Decoder, Error};

/// An owned copy of a decoded field: (name, value, static_index, never_indexed).
pub type Owned = (Vec<u8>, Vec<u8>, Option<u8>, bool);

/// Parses whitespace-separated hex as printed in RFC 7541 Appendix C.
pub fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Decodes `block` and returns owned copies of the fields.
pub fn decode(decoder: &mut Decoder, block: &[u8]) -> Result<Vec<Owned>, Error> {
    let mut out = Vec::new();
    decoder.decode(block, |f| {
        out.push((
            f.name.to_vec(),
            f.value.to_vec(),
            f.static_index,
            f.never_indexed,
        ))
    })?;
    Ok(out)
}

/// A small deterministic xorshift64 generator (no `rand` dependency).
pub struct XorShift(pub u64);

impl XorShift {
    /// The next pseudo-random value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Between 0 and `n - 1` pseudo-random bytes.
    pub fn bytes_below(&mut self, n: usize) -> Vec<u8> {
        let len = self.below(n);
        self.bytes(len)
    }

    /// `len` pseudo-random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}
