//! Header blocks written by an HPACK encoder with a dynamic table and read
//! by a decoder, while the decoder's side lowers and raises its table size
//! between blocks (as SETTINGS_HEADER_TABLE_SIZE would): every block must
//! decode to exactly the fields encoded, so the two tables never drift.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshwork_hpack::{Decoder, Encoder};

/// A few names that repeat (to be indexed), one that never should be, and
/// credentials (never indexed).
const NAMES: [&str; 8] = [
    "x-a",
    "x-envoy-peer-metadata",
    ":authority",
    "content-type",
    "traceparent",
    "authorization",
    "user-agent",
    ":path",
];

fuzz_target!(|data: &[u8]| {
    // The first byte picks the encoder's own limit; then each op byte:
    // high bit set = the decoder's side announces a new table size (from
    // the low bits), else a block of (op % 8) fields, each from two bytes
    // (name, value length and flags).
    let Some((&limit, mut rest)) = data.split_first() else {
        return;
    };
    let mut encoder = Encoder::with_table(usize::from(limit) * 32);
    let mut decoder = Decoder::new(4096);
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        if op & 0x80 != 0 {
            let size = usize::from(op & 0x7f) * 48;
            decoder.set_max_table_size(size);
            encoder.set_peer_table_size(size);
            continue;
        }
        let mut fields = Vec::new();
        for _ in 0..op % 8 {
            let Some((&[a, b], tail)) = rest.split_first_chunk::<2>() else {
                break;
            };
            rest = tail;
            let name = NAMES[usize::from(a % 8)];
            let value = format!("{}", b % 16).repeat(usize::from(a >> 3) * 7 + 1);
            fields.push((name, value, b & 0x80 != 0));
        }
        let mut block = Vec::new();
        encoder.begin_block(&mut block);
        for (n, v, s) in &fields {
            encoder.encode(n.as_bytes(), v.as_bytes(), *s, &mut block);
        }
        let mut got = Vec::new();
        decoder
            .decode(&block, |f| got.push((f.name.to_vec(), f.value.to_vec())))
            .expect("our own block decodes");
        let want: Vec<(Vec<u8>, Vec<u8>)> = fields
            .iter()
            .map(|(n, v, _)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        assert_eq!(got, want);
    }
});
