//! Header blocks from a peer, decoded one after another by one HPACK
//! decoder (so dynamic-table state carries over): nothing may panic, and
//! the table never outgrows its limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshwork_hpack::Decoder;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the table limit; the rest is a series of
    // blocks, each preceded by a one-byte length.
    let Some((&limit, mut rest)) = data.split_first() else {
        return;
    };
    let max = usize::from(limit) * 32;
    let mut decoder = Decoder::new(max);
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len).min(tail.len());
        let (block, next) = tail.split_at(len);
        let mut fields = 0usize;
        if decoder.decode(block, |f| fields += f.name.len() + f.value.len()).is_err() {
            return; // the connection would end here
        }
        assert!(decoder.table_size() <= max);
        rest = next;
    }
});
