use super::codes::CODES;
use super::{decode, encode, encoded_len};
use crate::Error;

fn enc(src: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode(src, &mut out);
    out
}

fn dec(src: &[u8]) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    decode(src, &mut out).map(|()| out)
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn kraft_equality() {
    // A complete prefix code: sum of 2^-len over all symbols is exactly 1.
    let sum: u64 = CODES.iter().map(|&(_, len)| 1u64 << (30 - len)).sum();
    assert_eq!(sum, 1 << 30);
}

#[test]
fn canonical_and_prefix_free() {
    // Canonical Huffman: sorted by (length, symbol), each code is the
    // previous one plus 1, shifted left by the length difference.
    let mut order: Vec<usize> = (0..CODES.len()).collect();
    order.sort_by_key(|&sym| (CODES[sym].1, sym));
    let (mut code, mut len) = (0u64, u32::from(CODES[order[0]].1));
    for (i, &sym) in order.iter().enumerate() {
        let (c, l) = CODES[sym];
        let l = u32::from(l);
        if i > 0 {
            code = (code + 1) << (l - len);
            len = l;
        }
        assert_eq!(u64::from(c), code, "symbol {sym}");
        assert!(u64::from(c) < 1 << l, "symbol {sym} wider than its length");
    }
    // Canonical codes with Kraft equality are prefix-free; check directly too.
    for (a, &(ca, la)) in CODES.iter().enumerate() {
        for (b, &(cb, lb)) in CODES.iter().enumerate() {
            if a != b && la <= lb {
                assert_ne!(cb >> (lb - la), ca, "{a} is a prefix of {b}");
            }
        }
    }
}

#[test]
fn known_lengths() {
    // Spot checks against RFC 7541 Appendix B.
    assert_eq!(CODES[usize::from(b'0')], (0x0, 5));
    assert_eq!(CODES[usize::from(b'a')], (0x3, 5));
    assert_eq!(CODES[usize::from(b' ')], (0x14, 6));
    assert_eq!(CODES[usize::from(b':')], (0x5c, 7));
    assert_eq!(CODES[usize::from(b'&')], (0xf8, 8));
    assert_eq!(CODES[0], (0x1ff8, 13));
    assert_eq!(CODES[10], (0x3fff_fffc, 30));
    assert_eq!(CODES[255], (0x3ff_ffee, 26));
    assert_eq!(CODES[256], (0x3fff_ffff, 30));
    let mut per_len = [0usize; 31];
    for &(_, len) in &CODES {
        per_len[usize::from(len)] += 1;
    }
    assert_eq!(&per_len[5..=8], &[10, 26, 32, 6]);
    assert_eq!(per_len[30], 4);
}

#[test]
fn rfc_appendix_c_strings() {
    let cases: [(&[u8], &str); 10] = [
        (b"www.example.com", "f1e3 c2e5 f23a 6ba0 ab90 f4ff"),
        (b"no-cache", "a8eb 1064 9cbf"),
        (b"custom-key", "25a8 49e9 5ba9 7d7f"),
        (b"custom-value", "25a8 49e9 5bb8 e8b4 bf"),
        (b"302", "6402"),
        (b"private", "aec3 771a 4b"),
        (
            b"Mon, 21 Oct 2013 20:13:21 GMT",
            "d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff",
        ),
        (
            b"https://www.example.com",
            "9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3",
        ),
        (b"307", "640e ff"),
        (b"gzip", "9bd9 ab"),
    ];
    for (plain, code) in cases {
        let code = hex(code);
        assert_eq!(enc(plain), code, "{}", String::from_utf8_lossy(plain));
        assert_eq!(encoded_len(plain), code.len());
        assert_eq!(dec(&code).unwrap(), plain);
    }
}

#[test]
fn every_byte_roundtrips() {
    let all: Vec<u8> = (0..=255).collect();
    assert_eq!(dec(&enc(&all)).unwrap(), all);
    for b in 0..=255u8 {
        let code = enc(&[b]);
        assert_eq!(code.len(), usize::from(CODES[usize::from(b)].1).div_ceil(8));
        assert_eq!(dec(&code).unwrap(), [b], "byte {b}");
        // Every pair exercises each symbol at every bit offset 0..8 over time.
        for c in [0u8, b'a', 0xff, 10] {
            assert_eq!(dec(&enc(&[c, b, c])).unwrap(), [c, b, c]);
        }
    }
}

#[test]
fn pseudo_random_roundtrips() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut buf = Vec::new();
    for round in 0..2000 {
        let len = (next() % 200) as usize;
        // Alternate full-range bytes with header-like ASCII.
        let src: Vec<u8> = (0..len)
            .map(|_| {
                let r = next();
                if round % 2 == 0 {
                    r as u8
                } else {
                    b' ' + (r % 95) as u8
                }
            })
            .collect();
        let code = enc(&src);
        assert_eq!(code.len(), encoded_len(&src));
        buf.clear();
        decode(&code, &mut buf).unwrap();
        assert_eq!(buf, src);
    }
}

#[test]
fn empty() {
    assert_eq!(enc(b""), b"");
    assert_eq!(dec(b"").unwrap(), b"");
}

#[test]
fn eos_inside_string_is_an_error() {
    // EOS is 30 one-bits; 32 one-bits contain it.
    assert_eq!(dec(&[0xff, 0xff, 0xff, 0xff]), Err(Error::InvalidHuffman));
    // 'a' (00011) then EOS then padding.
    let mut bits = (0b00011u64 << 30) | 0x3fff_ffff;
    bits = (bits << 5) | 0x1f; // 40 bits total
    let bytes = bits.to_be_bytes();
    assert_eq!(dec(&bytes[3..]), Err(Error::InvalidHuffman));
}

#[test]
fn padding_rules() {
    // "a" = 00011 + 111 padding.
    assert_eq!(dec(&[0x1f]).unwrap(), b"a");
    // Padding of zeros, or mixed.
    assert_eq!(dec(&[0x18]), Err(Error::InvalidHuffman));
    assert_eq!(dec(&[0x1d]), Err(Error::InvalidHuffman));
    // Padding of 8+ bits: 'a' then 11 one-bits.
    assert_eq!(dec(&[0x1f, 0xff]), Err(Error::InvalidHuffman));
    // A whole octet of padding after a complete string.
    let mut code = enc(b"0000000"); // 35 bits -> 5 bits of padding
    assert_eq!(dec(&code).unwrap(), b"0000000");
    code.push(0xff);
    assert_eq!(dec(&code), Err(Error::InvalidHuffman));
    // "000" is 15 bits: 1 bit of padding.
    assert_eq!(dec(&enc(b"000")).unwrap(), b"000");
    // "00000" is 25 bits: exactly 7 bits of padding, the most allowed.
    let code = enc(b"00000");
    assert_eq!(code, [0, 0, 0, 0x7f]);
    assert_eq!(dec(&code).unwrap(), b"00000");
    // A lone octet is never pure padding: 1111111 0 ends on a zero bit (a
    // prefix of '!'), 11111111 is 8 bits of padding.
    assert_eq!(dec(&[0xfe]), Err(Error::InvalidHuffman));
    assert_eq!(dec(&[0xff]), Err(Error::InvalidHuffman));
}

/// Bit-at-a-time decoder written straight from RFC 7541 §5.2, to check the
/// table-driven one against.
fn reference_decode(src: &[u8]) -> Result<Vec<u8>, Error> {
    let by_code: std::collections::HashMap<(u8, u32), usize> = CODES
        .iter()
        .enumerate()
        .map(|(sym, &(code, len))| ((len, code), sym))
        .collect();
    let (mut code, mut len, mut out) = (0u32, 0u8, Vec::new());
    for &byte in src {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            len += 1;
            match by_code.get(&(len, code)) {
                Some(256) => return Err(Error::InvalidHuffman),
                Some(&sym) => {
                    out.push(sym as u8);
                    (code, len) = (0, 0);
                }
                None => {}
            }
        }
    }
    // Padding: at most 7 bits, all ones.
    if len <= 7 && code == (1u32 << len) - 1 {
        Ok(out)
    } else {
        Err(Error::InvalidHuffman)
    }
}

#[test]
fn agrees_with_reference_decoder() {
    let mut seed = 0x0bad_cafe_dead_beefu64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (mut valid, mut invalid) = (0, 0);
    for round in 0..20_000 {
        let len = (next() % 12) as usize;
        let mut src: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if round % 2 == 0 {
            // Start from a valid encoding and damage its tail a little.
            let plain: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            src = enc(&plain);
            if let Some(last) = src.last_mut() {
                *last ^= (next() % 4) as u8;
            }
            if next() % 4 == 0 {
                src.push(if next() % 2 == 0 { 0xff } else { next() as u8 });
            }
        } else if round % 3 == 0 {
            // Long runs of ones reach EOS and the deepest states.
            for b in src.iter_mut() {
                *b |= next() as u8 | 0xf0;
            }
        }
        let want = reference_decode(&src);
        assert_eq!(dec(&src), want, "{src:02x?}");
        if want.is_ok() {
            valid += 1;
        } else {
            invalid += 1;
        }
    }
    assert!(valid > 1000 && invalid > 1000, "{valid} {invalid}");
}

#[test]
fn decode_appends() {
    let mut out = b"prefix:".to_vec();
    decode(&enc(b"value"), &mut out).unwrap();
    assert_eq!(out, b"prefix:value");
    // A failed decode leaves what was there before.
    assert_eq!(decode(&[0x18], &mut out), Err(Error::InvalidHuffman));
    assert_eq!(out, b"prefix:value");
}
