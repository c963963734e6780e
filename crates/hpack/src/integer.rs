//! Prefix-coded integers (RFC 7541 §5.1).
//!
//! Decoding is capped: values above `u32::MAX`, or encodings that need more
//! than 5 continuation octets (padding with `0x80` octets included), are
//! [`Error::IntegerOverflow`], so a hostile peer cannot make us loop or
//! produce absurd lengths.

use crate::Error;

/// Most continuation octets accepted after the prefix; 5 × 7 bits covers
/// `u32::MAX` for every prefix size.
const MAX_CONTINUATIONS: u32 = 5;

/// Decodes the integer whose prefix is the low `prefix_bits` (1..=8) of
/// `src[*pos]`, advancing `*pos` past it.
#[inline]
pub(crate) fn decode(src: &[u8], pos: &mut usize, prefix_bits: u32) -> Result<usize, Error> {
    let mask = (0xffu32 >> (8 - prefix_bits.clamp(1, 8))) as u8;
    let Some(&first) = src.get(*pos) else {
        return Err(Error::Truncated);
    };
    let mut i = *pos + 1;
    let prefix = first & mask;
    if prefix < mask {
        *pos = i;
        return Ok(usize::from(prefix));
    }
    let mut value = u64::from(mask);
    let mut count = 0;
    loop {
        if count == MAX_CONTINUATIONS {
            return Err(Error::IntegerOverflow);
        }
        let Some(&octet) = src.get(i) else {
            return Err(Error::Truncated);
        };
        i += 1;
        value += u64::from(octet & 0x7f) << (7 * count);
        if value > u64::from(u32::MAX) {
            return Err(Error::IntegerOverflow);
        }
        if octet & 0x80 == 0 {
            break;
        }
        count += 1;
    }
    *pos = i;
    usize::try_from(value).map_err(|_| Error::IntegerOverflow)
}

/// Appends `value` with a `prefix_bits`-bit (1..=8) prefix; `flags` supplies
/// the bits above the prefix in the first octet.
#[inline]
pub(crate) fn encode(value: usize, prefix_bits: u32, flags: u8, dst: &mut Vec<u8>) {
    let max = 0xffusize >> (8 - prefix_bits.clamp(1, 8));
    if value < max {
        dst.push(flags | value as u8);
        return;
    }
    dst.push(flags | max as u8);
    let mut rest = value - max;
    while rest >= 0x80 {
        dst.push(0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    dst.push(rest as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(src: &[u8], prefix: u32) -> Result<(usize, usize), Error> {
        let mut pos = 0;
        decode(src, &mut pos, prefix).map(|v| (v, pos))
    }

    fn enc(value: usize, prefix: u32) -> Vec<u8> {
        let mut out = Vec::new();
        encode(value, prefix, 0, &mut out);
        out
    }

    #[test]
    fn rfc_c1_1_ten_in_5_bit_prefix() {
        assert_eq!(enc(10, 5), [0x0a]);
        assert_eq!(dec(&[0x0a], 5), Ok((10, 1)));
        // Bits above the prefix are ignored.
        assert_eq!(dec(&[0xea], 5), Ok((10, 1)));
    }

    #[test]
    fn rfc_c1_2_1337_in_5_bit_prefix() {
        assert_eq!(enc(1337, 5), [0x1f, 0x9a, 0x0a]);
        assert_eq!(dec(&[0x1f, 0x9a, 0x0a], 5), Ok((1337, 3)));
        assert_eq!(dec(&[0xff, 0x9a, 0x0a, 0x55], 5), Ok((1337, 3)));
    }

    #[test]
    fn rfc_c1_3_42_at_octet_boundary() {
        assert_eq!(enc(42, 8), [0x2a]);
        assert_eq!(dec(&[0x2a], 8), Ok((42, 1)));
    }

    #[test]
    fn prefix_boundaries() {
        for prefix in 1..=8 {
            let max = (1usize << prefix) - 1;
            for value in [0, 1, max - 1, max, max + 1, max + 127, max + 128, 1 << 20] {
                let bytes = enc(value, prefix);
                assert_eq!(
                    dec(&bytes, prefix),
                    Ok((value, bytes.len())),
                    "{prefix} {value}"
                );
            }
            let bytes = enc(u32::MAX as usize, prefix);
            assert_eq!(dec(&bytes, prefix), Ok((u32::MAX as usize, bytes.len())));
        }
        assert_eq!(enc(31, 5), [0x1f, 0x00]);
        assert_eq!(enc(30, 5), [0x1e]);
    }

    #[test]
    fn flags_are_kept() {
        let mut out = Vec::new();
        encode(3, 4, 0x10, &mut out);
        encode(20, 4, 0x10, &mut out);
        assert_eq!(out, [0x13, 0x1f, 0x05]);
    }

    #[test]
    fn truncated() {
        assert_eq!(dec(&[], 5), Err(Error::Truncated));
        assert_eq!(dec(&[0x1f], 5), Err(Error::Truncated));
        assert_eq!(dec(&[0x1f, 0x80], 5), Err(Error::Truncated));
        assert_eq!(dec(&[0x1f, 0xff, 0xff, 0xff], 5), Err(Error::Truncated));
    }

    #[test]
    fn overflow() {
        // u32::MAX itself is fine with 5 continuation octets.
        let max = enc(u32::MAX as usize, 5);
        assert_eq!(max.len(), 6);
        // One more is not.
        let over = enc(u32::MAX as usize + 1, 5);
        assert_eq!(dec(&over, 5), Err(Error::IntegerOverflow));
        // Sixth continuation octet, even though the value is small.
        let padded = [0x1f, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00];
        assert_eq!(dec(&padded, 5), Err(Error::IntegerOverflow));
        // Overflow is reported without waiting for more input.
        assert_eq!(
            dec(&[0x1f, 0x80, 0x80, 0x80, 0x80, 0x80], 5),
            Err(Error::IntegerOverflow)
        );
        assert_eq!(
            dec(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x7f], 8),
            Err(Error::IntegerOverflow)
        );
        // Five zero-value continuation octets are still accepted.
        assert_eq!(dec(&[0x1f, 0x80, 0x80, 0x80, 0x80, 0x00], 5), Ok((31, 6)));
    }
}
