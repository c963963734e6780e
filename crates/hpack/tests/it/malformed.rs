//! Invalid header blocks: each is rejected with the right error.

use crate::{decode, hex};
use meshwork_hpack::{Decoder, Error, huffman};

fn err(block: &[u8]) -> Error {
    decode(&mut Decoder::new(4096), block).unwrap_err()
}

#[test]
fn truncated_integer() {
    assert_eq!(err(&[0xff]), Error::Truncated); // indexed, prefix full
    assert_eq!(err(&[0xff, 0x80]), Error::Truncated);
    assert_eq!(err(&[0x7f]), Error::Truncated); // incremental, name index
    assert_eq!(err(&[0x3f]), Error::Truncated); // size update
    assert_eq!(err(&[0x00, 0x7f]), Error::Truncated); // name length
    assert_eq!(err(&[0x04, 0xff, 0x81]), Error::Truncated); // value length
}

#[test]
fn truncated_string() {
    assert_eq!(err(&[0x40, 0x05, b'a', b'b']), Error::Truncated);
    assert_eq!(err(&[0x00, 0x01, b'a']), Error::Truncated); // value missing
    assert_eq!(err(&[0x00, 0x01, b'a', 0x02, b'x']), Error::Truncated);
    assert_eq!(err(&[0x04]), Error::Truncated);
    assert_eq!(err(&[0x04, 0x83, 0x1f]), Error::Truncated); // Huffman value
    // A valid field first does not help.
    assert_eq!(err(&[0x82, 0x04, 0x01]), Error::Truncated);
}

#[test]
fn huge_length_prefix() {
    // ~2^28 octets announced, 1 present: rejected before any allocation.
    assert_eq!(
        err(&[0x00, 0x7f, 0xff, 0xff, 0xff, 0x7f, b'a']),
        Error::Truncated
    );
    assert_eq!(
        err(&[0x00, 0xff, 0xff, 0xff, 0xff, 0x7f, b'a']),
        Error::Truncated
    );
    // u32::MAX exactly is still just too long for the block.
    let mut block = vec![0x04, 0x7f];
    block.extend([0x80, 0xff, 0xff, 0xff, 0x0f]); // 127 + 0xffff_ff80 = u32::MAX
    assert_eq!(err(&block), Error::Truncated);
    // Beyond u32::MAX is an overflow.
    assert_eq!(
        err(&[0x00, 0x7f, 0xff, 0xff, 0xff, 0xff, 0x0f]),
        Error::IntegerOverflow
    );
    assert_eq!(
        err(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x1f]),
        Error::IntegerOverflow
    );
    // More than 5 continuation octets, even for a small value.
    assert_eq!(
        err(&[0xff, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00]),
        Error::IntegerOverflow
    );
}

#[test]
fn bad_index() {
    assert_eq!(err(&[0x80]), Error::InvalidIndex); // index 0
    assert_eq!(err(&[0xbe]), Error::InvalidIndex); // 62, empty dynamic table
    assert_eq!(err(&[0x7f, 0x00, 0x00]), Error::InvalidIndex); // name index 63
    assert_eq!(err(&[0x0f, 0x2f, 0x00]), Error::InvalidIndex); // name index 62
    assert_eq!(err(&[0x1f, 0x2f, 0x00]), Error::InvalidIndex);
    assert_eq!(
        err(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x07]),
        Error::InvalidIndex
    ); // ~2^31
    // One dynamic entry: 62 is valid, 63 is not.
    let mut d = Decoder::new(4096);
    decode(&mut d, &[0x40, 0x01, b'a', 0x01, b'b']).unwrap();
    assert_eq!(decode(&mut d, &[0xbe]).unwrap()[0].1, b"b");
    assert_eq!(decode(&mut d, &[0xbf]), Err(Error::InvalidIndex));
}

#[test]
fn eos_in_huffman() {
    assert_eq!(
        err(&[0x00, 0x84, 0xff, 0xff, 0xff, 0xff, 0x00]),
        Error::InvalidHuffman
    );
    assert_eq!(
        err(&[0x04, 0x84, 0xff, 0xff, 0xff, 0xff]),
        Error::InvalidHuffman
    );
    let mut out = Vec::new();
    assert_eq!(
        huffman::decode(&[0xff; 4], &mut out),
        Err(Error::InvalidHuffman)
    );
}

#[test]
fn over_long_padding() {
    // 'a' (00011) followed by 11 one-bits.
    assert_eq!(err(&[0x04, 0x82, 0x1f, 0xff]), Error::InvalidHuffman);
    assert_eq!(err(&[0x00, 0x81, 0xff, 0x00]), Error::InvalidHuffman);
    // www.example.com (12 octets) with an extra octet of padding.
    assert_eq!(
        err(&hex("048d f1e3 c2e5 f23a 6ba0 ab90 f4ff ff")),
        Error::InvalidHuffman
    );
}

#[test]
fn non_one_padding() {
    assert_eq!(err(&[0x04, 0x81, 0x18]), Error::InvalidHuffman); // 'a' + 000
    assert_eq!(err(&[0x04, 0x81, 0x1e]), Error::InvalidHuffman); // 'a' + 110
    assert_eq!(err(&[0x00, 0x81, 0x1b, 0x00]), Error::InvalidHuffman); // 'a' + 011
}

#[test]
fn size_update_too_large() {
    // 4096 = 31 + 4065 (0x61 | 0x80, 0x1f) is allowed, 4097 is not.
    let mut d = Decoder::new(4096);
    assert_eq!(decode(&mut d, &[0x3f, 0xe1, 0x1f, 0x82]).unwrap().len(), 1);
    assert_eq!(
        decode(&mut d, &[0x3f, 0xe2, 0x1f]),
        Err(Error::TableSizeUpdateTooLarge)
    );
    assert_eq!(
        err(&[0x3f, 0xff, 0xff, 0xff, 0xff, 0x07]),
        Error::TableSizeUpdateTooLarge
    );
    let mut zero = Decoder::new(0);
    assert_eq!(
        decode(&mut zero, &[0x21]),
        Err(Error::TableSizeUpdateTooLarge)
    );
    assert_eq!(decode(&mut Decoder::new(0), &[0x20]), Ok(vec![]));
}

#[test]
fn size_update_after_field() {
    assert_eq!(err(&[0x82, 0x20]), Error::TableSizeUpdateNotAtStart);
    assert_eq!(err(&[0x20, 0x82, 0x20]), Error::TableSizeUpdateNotAtStart);
    assert_eq!(
        err(&[0x04, 0x00, 0x3f, 0xe1, 0x1f]),
        Error::TableSizeUpdateNotAtStart
    );
    // Several updates before the first field are fine (RFC 7541 §4.2).
    let mut d = Decoder::new(4096);
    assert_eq!(
        decode(&mut d, &[0x20, 0x3f, 0xe1, 0x1f, 0x82])
            .unwrap()
            .len(),
        1
    );
    // Each block starts afresh.
    assert_eq!(decode(&mut d, &[0x20, 0x82]).unwrap().len(), 1);
}

#[test]
fn size_update_evicts() {
    let mut d = Decoder::new(4096);
    decode(
        &mut d,
        &[0x40, 0x01, b'a', 0x01, b'b', 0x40, 0x01, b'c', 0x01, b'd'],
    )
    .unwrap();
    assert_eq!(d.table_size(), 68);
    decode(&mut d, &[0x3f, 0x04]).unwrap(); // 35: keeps only the newest
    assert_eq!((d.table_len(), d.table_size()), (1, 34));
    assert_eq!(d.table_entry(1), Some((&b"c"[..], &b"d"[..])));
    assert_eq!(decode(&mut d, &[0xbf]), Err(Error::InvalidIndex));
}

#[test]
fn lowered_setting_requires_update() {
    let mut d = Decoder::new(4096);
    decode(&mut d, &[0x40, 0x01, b'a', 0x01, b'b']).unwrap();
    d.set_max_table_size(100);
    assert_eq!(decode(&mut d, &[0x82]), Err(Error::TableSizeUpdateTooLarge));

    let mut d = Decoder::new(4096);
    decode(&mut d, &[0x40, 0x01, b'a', 0x01, b'b']).unwrap();
    d.set_max_table_size(100);
    assert_eq!(
        decode(&mut d, &[0x3f, 0x46]),
        Err(Error::TableSizeUpdateTooLarge)
    ); // 101
    let mut d = Decoder::new(4096);
    d.set_max_table_size(0);
    assert_eq!(decode(&mut d, &[0x20, 0x82]).unwrap().len(), 1);
    assert_eq!(decode(&mut d, &[0x82]).unwrap().len(), 1); // no longer required
    // Raising the limit needs no update.
    let mut d = Decoder::new(100);
    d.set_max_table_size(8192);
    assert_eq!(decode(&mut d, &[0x82]).unwrap().len(), 1);
    assert_eq!(decode(&mut d, &[0x3f, 0xe1, 0x3f]).unwrap().len(), 0); // 8192
}

#[test]
fn string_too_long() {
    let mut d = Decoder::new(4096);
    d.set_max_string_len(3);
    assert_eq!(
        decode(&mut d, &[0x00, 0x03, b'a', b'b', b'c', 0x00])
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        decode(&mut d, &[0x00, 0x04, b'a', b'b', b'c', b'd', 0x00]),
        Err(Error::StringTooLong)
    );
    // Huffman "aaaa" is 3 octets but decodes to 4.
    let mut block = vec![0x04, 0x83];
    huffman::encode(b"aaaa", &mut block);
    assert_eq!(decode(&mut d, &block), Err(Error::StringTooLong));
}

#[test]
fn errors_display() {
    let all = [
        Error::Truncated,
        Error::IntegerOverflow,
        Error::InvalidIndex,
        Error::InvalidHuffman,
        Error::TableSizeUpdateTooLarge,
        Error::TableSizeUpdateNotAtStart,
        Error::StringTooLong,
    ];
    for e in all {
        let text = e.to_string();
        assert!(text.starts_with("hpack: "), "{text}");
        let _: &dyn std::error::Error = &e;
    }
}
