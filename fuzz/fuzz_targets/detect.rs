//! Protocol detection on a connection's first bytes: `classify` sees
//! whatever a peer sends and must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshwork_proxy::detect::{Detected, MAX_PEEK, Verdict, classify};

fuzz_target!(|data: &[u8]| {
    let verdict = classify(data);
    // Detection peeks at most MAX_PEEK bytes; a decision on any prefix it
    // may see must also come without panicking.
    if data.len() > MAX_PEEK {
        let _ = classify(&data[..MAX_PEEK]);
    }
    if let Verdict::Done(d) = &verdict {
        // The accessors used by filter-chain matching must hold up too.
        let _ = d.transport();
        let _ = d.application();
        if let Detected::Tls { sni, alpn } = d {
            let _ = (sni.as_deref().map(str::len), alpn.len());
        }
    }
});
