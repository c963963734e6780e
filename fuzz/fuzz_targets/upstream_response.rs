//! Arbitrary bytes as an upstream's HTTP/1.1 response, decoded the way the
//! proxy's own upstream exchange decodes them (head, interim responses,
//! every body framing, trailers). Malformed input is an error, never a
//! panic; a decoded body is never longer than the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshwork_proxy::upstream_h1_parse::decode_response;

fuzz_target!(|data: &[u8]| {
    let head_request = data.first().is_some_and(|b| b & 1 == 1);
    if let Ok((_, frames)) = decode_response(data, head_request) {
        let body: usize = frames
            .iter()
            .filter_map(|f| f.data_ref())
            .map(|d| d.len())
            .sum();
        assert!(body <= data.len());
    }
});
