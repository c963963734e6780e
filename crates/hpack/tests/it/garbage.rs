//! Garbage in: thousands of pseudo-random and mutated blocks. Only checks
//! that nothing panics and the table never exceeds its limit.

use crate::{XorShift, hex};
use meshwork_hpack::{Decoder, huffman};

/// Valid block sequences to mutate (RFC 7541 C.4 and C.6, plus one with a
/// size update), so mutations reach deep paths; later blocks reference
/// entries the earlier ones inserted.
const SEQUENCES: [&[&str]; 3] = [
    &[
        "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
        "8286 84be 5886 a8eb 1064 9cbf",
        "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
    ],
    &[
        "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
         2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
        "4883 640e ffc1 c0bf",
        "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
         77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
         9587 3160 65c0 03ed 4ee5 b106 3d50 07",
    ],
    &["20 3f61 1008 7061 7373 776f 7264 0673 6563 7265 74 4003 6b65 7901 76be"],
];

/// Decodes `block`, ignoring the result; checks the table stays in bounds.
fn feed(d: &mut Decoder, block: &[u8], limit: usize) {
    let _ = d.decode(block, |f| {
        std::hint::black_box((f.name, f.value));
    });
    assert!(d.table_size() <= limit);
}

#[test]
fn random_blocks_never_panic() {
    let mut rng = XorShift(0x0123_4567_89ab_cdef);
    for limit in [0, 64, 256, 4096] {
        // One long-lived decoder that keeps going after errors, and fresh ones.
        let mut sticky = Decoder::new(limit);
        for _ in 0..5000 {
            let block = rng.bytes_below(96);
            feed(&mut sticky, &block, limit);
            feed(&mut Decoder::new(limit), &block, limit);
        }
    }
}

#[test]
fn biased_blocks_never_panic() {
    // Bytes drawn from the interesting values: representation prefixes,
    // full integer prefixes, continuation octets, Huffman flags.
    const PICKS: [u8; 16] = [
        0x00, 0x10, 0x20, 0x3f, 0x40, 0x7f, 0x80, 0xff, 0x0f, 0x1f, 0x81, 0xbe, 0x01, 0x02, 0x61,
        0xe1,
    ];
    let mut rng = XorShift(0xfeed_face_0bad_f00d);
    let mut sticky = Decoder::new(4096);
    for _ in 0..20_000 {
        let len = rng.below(40);
        let block: Vec<u8> = (0..len)
            .map(|_| {
                if rng.below(2) == 0 {
                    PICKS[rng.below(PICKS.len())]
                } else {
                    rng.next_u64() as u8
                }
            })
            .collect();
        feed(&mut sticky, &block, 4096);
        feed(&mut Decoder::new(256), &block, 256);
    }
}

#[test]
fn mutated_valid_blocks_never_panic() {
    let mut rng = XorShift(0x5eed_5eed_5eed_5eed);
    let sequences: Vec<Vec<Vec<u8>>> = SEQUENCES
        .iter()
        .map(|seq| seq.iter().map(|s| hex(s)).collect())
        .collect();
    for seq in &sequences {
        let mut d = Decoder::new(256);
        for block in seq {
            assert!(d.decode(block, |_| {}).is_ok());
        }
    }
    for _ in 0..20_000 {
        let seq = &sequences[rng.below(sequences.len())];
        let target = rng.below(seq.len());
        let limit = [0, 256, 4096][rng.below(3)];
        let mut d = Decoder::new(limit);
        for block in &seq[..target] {
            feed(&mut d, block, limit);
        }
        let mut block = seq[target].clone();
        for _ in 0..1 + rng.below(4) {
            let len = block.len();
            match rng.below(4) {
                0 if len > 0 => block[rng.below(len)] ^= 1 << rng.below(8),
                1 if len > 0 => block[rng.below(len)] = rng.next_u64() as u8,
                2 => block.truncate(rng.below(len + 1)),
                _ => block.insert(rng.below(len + 1), rng.next_u64() as u8),
            }
        }
        feed(&mut d, &block, limit);
    }
}

#[test]
fn random_huffman_never_panics() {
    let mut rng = XorShift(0x1357_9bdf_2468_ace0);
    let mut out = Vec::new();
    let mut ok = 0;
    for _ in 0..20_000 {
        let src = rng.bytes_below(24);
        out.clear();
        if huffman::decode(&src, &mut out).is_ok() {
            ok += 1;
            // Whatever decodes must re-encode to the same bits when the
            // padding was canonical; at least it must decode again.
            let mut again = Vec::new();
            huffman::encode(&out, &mut again);
            let mut back = Vec::new();
            huffman::decode(&again, &mut back).unwrap();
            assert_eq!(back, out);
        }
    }
    assert!(ok > 0);
}
