//! Encoder output decodes back to the same fields, flags and static indices;
//! Huffman strings and indexing round-trip through the decoder.

use crate::{Owned, XorShift, decode};
use meshwork_hpack::{Decoder, Encoder, huffman, static_table};

/// What the decoder must report for a field the encoder wrote: the static
/// index the encoder used (exact entry, or first entry with the name).
/// Credentials always go "never indexed".
fn expected(name: &[u8], value: &[u8], sensitive: bool) -> Owned {
    let static_index = static_table::find(name, value).map(|m| m.index);
    let sensitive = sensitive || matches!(name, b"authorization" | b"proxy-authorization");
    (name.to_vec(), value.to_vec(), static_index, sensitive)
}

fn roundtrip(fields: &[(Vec<u8>, Vec<u8>, bool)], table_size: usize) {
    let mut block = Vec::new();
    let mut encoder = Encoder::new();
    for (name, value, sensitive) in fields {
        encoder.encode(name, value, *sensitive, &mut block);
    }
    let mut d = Decoder::new(table_size);
    let got = decode(&mut d, &block).unwrap();
    let want: Vec<Owned> = fields.iter().map(|(n, v, s)| expected(n, v, *s)).collect();
    assert_eq!(got, want);
    // The stateless encoder never touches the peer's dynamic table.
    assert_eq!(d.table_size(), 0);
}

#[test]
fn every_static_entry() {
    let mut fields = Vec::new();
    for i in 1..=61 {
        let (name, value) = static_table::get(i).unwrap();
        for sensitive in [false, true] {
            fields.push((name.to_vec(), value.to_vec(), sensitive));
            fields.push((name.to_vec(), b"other value".to_vec(), sensitive));
        }
    }
    roundtrip(&fields, 4096);
    roundtrip(&fields, 0);
}

#[test]
fn exact_matches_are_one_octet() {
    let mut block = Vec::new();
    let mut e = Encoder::new();
    e.encode(b":method", b"GET", false, &mut block);
    e.encode(b":scheme", b"https", false, &mut block);
    e.encode(b":path", b"/", false, &mut block);
    e.encode(b"accept-encoding", b"gzip, deflate", false, &mut block);
    assert_eq!(block, [0x82, 0x87, 0x84, 0x90]);
    let got = decode(&mut Decoder::new(4096), &block).unwrap();
    let idx: Vec<Option<u8>> = got.iter().map(|f| f.2).collect();
    assert_eq!(idx, [Some(2), Some(7), Some(4), Some(16)]);
}

#[test]
fn random_fields() {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    for _ in 0..300 {
        let count = rng.below(12);
        let fields: Vec<(Vec<u8>, Vec<u8>, bool)> = (0..count)
            .map(|_| {
                let name = match rng.below(3) {
                    0 => static_table::get(1 + rng.below(61)).unwrap().0.to_vec(),
                    1 => (0..1 + rng.below(40))
                        .map(|_| b'a' + rng.below(26) as u8)
                        .collect(),
                    _ => rng.bytes_below(200),
                };
                let value_len = [0, 1, 126, 127, 128, 300, 5000][rng.below(7)];
                let value = rng.bytes(value_len);
                (name, value, rng.below(2) == 1)
            })
            .collect();
        roundtrip(&fields, 4096);
    }
}

#[test]
fn statuses() {
    let mut e = Encoder::new();
    let mut d = Decoder::new(4096);
    for status in (0..=1000u16).chain([9999, 10000, u16::MAX]) {
        let mut block = Vec::new();
        e.encode_status(status, &mut block);
        let got = decode(&mut d, &block).unwrap();
        let index = match status {
            200 => 8,
            204 => 9,
            206 => 10,
            304 => 11,
            400 => 12,
            404 => 13,
            500 => 14,
            _ => 8,
        };
        let want: Owned = (
            b":status".to_vec(),
            status.to_string().into_bytes(),
            Some(index),
            false,
        );
        assert_eq!(got, [want]);
        assert_eq!(block.len() == 1, index != 8 || status == 200);
    }
}

/// Appends a literal with incremental indexing and literal name, with both
/// strings Huffman-coded or raw.
fn literal_indexed(name: &[u8], value: &[u8], use_huffman: bool, dst: &mut Vec<u8>) {
    dst.push(0x40);
    for s in [name, value] {
        if use_huffman {
            let mut code = Vec::new();
            huffman::encode(s, &mut code);
            push_len(code.len(), 0x80, dst);
            dst.extend_from_slice(&code);
        } else {
            push_len(s.len(), 0, dst);
            dst.extend_from_slice(s);
        }
    }
}

/// Appends an integer with a 7-bit prefix below `flag`.
fn push_len(len: usize, flag: u8, dst: &mut Vec<u8>) {
    if len < 127 {
        dst.push(flag | len as u8);
        return;
    }
    dst.push(flag | 127);
    let mut rest = len - 127;
    while rest >= 128 {
        dst.push(0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    dst.push(rest as u8);
}

#[test]
fn huffman_and_dynamic_table() {
    let mut rng = XorShift(0xdead_beef_cafe_f00d);
    let mut d = Decoder::new(4096);
    // Mirror of the table: newest first, with the §4.4 eviction rule.
    let mut mirror: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for round in 0..500 {
        let name = rng.bytes_below(60);
        let value_len = [0, 3, 100, 200, 1000, 5000][rng.below(6)];
        let value = rng.bytes(value_len);
        let mut block = Vec::new();
        literal_indexed(&name, &value, round % 2 == 0, &mut block);
        // Reference a random existing entry too.
        let pick = if mirror.is_empty() {
            None
        } else {
            Some(rng.below(mirror.len()))
        };
        let got = decode(&mut d, &block).unwrap();
        assert_eq!(got, [(name.clone(), value.clone(), None, false)]);
        let size = name.len() + value.len() + 32;
        if size > 4096 {
            mirror.clear();
        } else {
            mirror.insert(0, (name, value));
            while mirror
                .iter()
                .map(|(n, v)| n.len() + v.len() + 32)
                .sum::<usize>()
                > 4096
            {
                mirror.pop();
            }
        }
        let total: usize = mirror.iter().map(|(n, v)| n.len() + v.len() + 32).sum();
        assert_eq!((d.table_len(), d.table_size()), (mirror.len(), total));
        if let Some(i) = pick.filter(|&i| i < mirror.len()) {
            let mut block = Vec::new();
            push_len(62 + i, 0x80, &mut block); // indexed field, 7-bit prefix
            let got = decode(&mut d, &block).unwrap();
            assert_eq!((&got[0].0, &got[0].1), (&mirror[i].0, &mirror[i].1));
        }
    }
}
