//! RFC 7541 Appendix C.2-C.6: every example decodes to exactly the listed
//! header list and leaves exactly the listed dynamic table.

use crate::{decode, hex};
use meshwork_hpack::Decoder;

/// Decodes one example and checks the header list, the dynamic table
/// (newest first, as the RFC lists it) and its size.
fn check(
    d: &mut Decoder,
    block: &str,
    headers: &[(&str, &str)],
    table: &[(&str, &str)],
    size: usize,
) {
    let fields = decode(d, &hex(block)).unwrap();
    let got: Vec<(&[u8], &[u8])> = fields.iter().map(|f| (&f.0[..], &f.1[..])).collect();
    let want: Vec<(&[u8], &[u8])> = headers
        .iter()
        .map(|h| (h.0.as_bytes(), h.1.as_bytes()))
        .collect();
    assert_eq!(got, want, "headers of {block}");
    assert_eq!(d.table_len(), table.len(), "table length after {block}");
    for (i, (name, value)) in table.iter().enumerate() {
        assert_eq!(
            d.table_entry(i + 1),
            Some((name.as_bytes(), value.as_bytes())),
            "table entry {} after {block}",
            i + 1
        );
    }
    assert_eq!(d.table_entry(table.len() + 1), None);
    assert_eq!(d.table_entry(0), None);
    assert_eq!(d.table_size(), size, "table size after {block}");
}

#[test]
fn c2_1_literal_with_indexing() {
    let mut d = Decoder::new(4096);
    check(
        &mut d,
        "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
        &[("custom-key", "custom-header")],
        &[("custom-key", "custom-header")],
        55,
    );
}

#[test]
fn c2_2_literal_without_indexing() {
    let mut d = Decoder::new(4096);
    check(
        &mut d,
        "040c 2f73 616d 706c 652f 7061 7468",
        &[(":path", "/sample/path")],
        &[],
        0,
    );
    let fields = decode(
        &mut Decoder::new(4096),
        &hex("040c 2f73 616d 706c 652f 7061 7468"),
    )
    .unwrap();
    assert_eq!((fields[0].2, fields[0].3), (Some(4), false));
}

#[test]
fn c2_3_literal_never_indexed() {
    let block = "1008 7061 7373 776f 7264 0673 6563 7265 74";
    let mut d = Decoder::new(4096);
    check(&mut d, block, &[("password", "secret")], &[], 0);
    let fields = decode(&mut Decoder::new(4096), &hex(block)).unwrap();
    assert_eq!((fields[0].2, fields[0].3), (None, true));
}

#[test]
fn c2_4_indexed() {
    let mut d = Decoder::new(4096);
    check(&mut d, "82", &[(":method", "GET")], &[], 0);
}

const REQ1: &[(&str, &str)] = &[
    (":method", "GET"),
    (":scheme", "http"),
    (":path", "/"),
    (":authority", "www.example.com"),
];
const REQ2: &[(&str, &str)] = &[
    (":method", "GET"),
    (":scheme", "http"),
    (":path", "/"),
    (":authority", "www.example.com"),
    ("cache-control", "no-cache"),
];
const REQ3: &[(&str, &str)] = &[
    (":method", "GET"),
    (":scheme", "https"),
    (":path", "/index.html"),
    (":authority", "www.example.com"),
    ("custom-key", "custom-value"),
];
const REQ_TABLE3: &[(&str, &str)] = &[
    ("custom-key", "custom-value"),
    ("cache-control", "no-cache"),
    (":authority", "www.example.com"),
];

#[test]
fn c3_requests_without_huffman() {
    let mut d = Decoder::new(4096);
    check(
        &mut d,
        "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        REQ1,
        &REQ_TABLE3[2..],
        57,
    );
    check(
        &mut d,
        "8286 84be 5808 6e6f 2d63 6163 6865",
        REQ2,
        &REQ_TABLE3[1..],
        110,
    );
    check(
        &mut d,
        "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
        REQ3,
        REQ_TABLE3,
        164,
    );
}

#[test]
fn c4_requests_with_huffman() {
    let mut d = Decoder::new(4096);
    check(
        &mut d,
        "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
        REQ1,
        &REQ_TABLE3[2..],
        57,
    );
    check(
        &mut d,
        "8286 84be 5886 a8eb 1064 9cbf",
        REQ2,
        &REQ_TABLE3[1..],
        110,
    );
    check(
        &mut d,
        "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
        REQ3,
        REQ_TABLE3,
        164,
    );
}

#[test]
fn c3_static_index_and_flags() {
    let mut d = Decoder::new(4096);
    let first = decode(
        &mut d,
        &hex("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d"),
    )
    .unwrap();
    let idx: Vec<Option<u8>> = first.iter().map(|f| f.2).collect();
    assert_eq!(idx, [Some(2), Some(6), Some(4), Some(1)]);
    let second = decode(&mut d, &hex("8286 84be 5808 6e6f 2d63 6163 6865")).unwrap();
    let idx: Vec<Option<u8>> = second.iter().map(|f| f.2).collect();
    // ":authority" now comes from the dynamic table but keeps its static name.
    assert_eq!(idx, [Some(2), Some(6), Some(4), Some(1), Some(24)]);
    let third = decode(
        &mut d,
        &hex("8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65"),
    )
    .unwrap();
    let idx: Vec<Option<u8>> = third.iter().map(|f| f.2).collect();
    assert_eq!(idx, [Some(2), Some(7), Some(5), Some(1), None]);
    assert!(first.iter().chain(&second).chain(&third).all(|f| !f.3));
}

const DATE1: &str = "Mon, 21 Oct 2013 20:13:21 GMT";
const DATE2: &str = "Mon, 21 Oct 2013 20:13:22 GMT";
const LOCATION: &str = "https://www.example.com";
const COOKIE: &str = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";

fn resp1() -> [(&'static str, &'static str); 4] {
    [
        (":status", "302"),
        ("cache-control", "private"),
        ("date", DATE1),
        ("location", LOCATION),
    ]
}

fn resp1_table() -> [(&'static str, &'static str); 4] {
    [
        ("location", LOCATION),
        ("date", DATE1),
        ("cache-control", "private"),
        (":status", "302"),
    ]
}

fn resp2() -> [(&'static str, &'static str); 4] {
    [
        (":status", "307"),
        ("cache-control", "private"),
        ("date", DATE1),
        ("location", LOCATION),
    ]
}

fn resp2_table() -> [(&'static str, &'static str); 4] {
    [
        (":status", "307"),
        ("location", LOCATION),
        ("date", DATE1),
        ("cache-control", "private"),
    ]
}

fn resp3() -> [(&'static str, &'static str); 6] {
    [
        (":status", "200"),
        ("cache-control", "private"),
        ("date", DATE2),
        ("location", LOCATION),
        ("content-encoding", "gzip"),
        ("set-cookie", COOKIE),
    ]
}

fn resp3_table() -> [(&'static str, &'static str); 3] {
    [
        ("set-cookie", COOKIE),
        ("content-encoding", "gzip"),
        ("date", DATE2),
    ]
}

#[test]
fn c5_responses_without_huffman() {
    let mut d = Decoder::new(256);
    check(
        &mut d,
        "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
         2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70
         6c65 2e63 6f6d",
        &resp1(),
        &resp1_table(),
        222,
    );
    check(&mut d, "4803 3330 37c1 c0bf", &resp2(), &resp2_table(), 222);
    check(
        &mut d,
        "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d
         54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049
         5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e
         3d31",
        &resp3(),
        &resp3_table(),
        215,
    );
}

#[test]
fn c6_responses_with_huffman() {
    let mut d = Decoder::new(256);
    check(
        &mut d,
        "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
         2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
        &resp1(),
        &resp1_table(),
        222,
    );
    check(&mut d, "4883 640e ffc1 c0bf", &resp2(), &resp2_table(), 222);
    check(
        &mut d,
        "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
         77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
         9587 3160 65c0 03ed 4ee5 b106 3d50 07",
        &resp3(),
        &resp3_table(),
        215,
    );
}
