//! HPACK (RFC 7541) header compression for Meshwork's own HTTP/2 server and client.
//!
//! Written in-house because no maintained HPACK crate exists and the `h2`
//! crate keeps its codec private. Two halves with different trade-offs:
//!
//! - [`Decoder`] implements all of RFC 7541 (static and dynamic tables,
//!   Huffman, size updates). It is built for untrusted bytes: it never panics,
//!   checks every length against the block before using it, caps integers at
//!   `u32::MAX`, and hands each field to a callback as borrowed slices, so
//!   decoding allocates nothing per field (Huffman strings go to scratch
//!   buffers the decoder reuses; only dynamic-table inserts allocate).
//!   Huffman decoding is one table lookup per input octet; the 256 KiB table
//!   is built once per process on first use.
//! - [`Encoder`] never Huffman-encodes (cheapest on CPU) and only appends
//!   to the caller's `Vec`. [`Encoder::new`] is stateless (static table and
//!   literals, valid for any SETTINGS_HEADER_TABLE_SIZE); [`Encoder::with_table`]
//!   also keeps a dynamic table of the fields that repeat, so a header sent
//!   on every request (peer metadata) costs one or two octets after the
//!   first.
//!
//! ```
//! use meshwork_hpack::{Decoder, Encoder};
//!
//! let mut block = Vec::new();
//! let mut encoder = Encoder::new();
//! encoder.encode_status(200, &mut block);
//! encoder.encode(b"content-type", b"text/plain", false, &mut block);
//!
//! let mut decoder = Decoder::new(4096);
//! let mut fields = Vec::new();
//! decoder
//!     .decode(&block, |f| fields.push((f.name.to_vec(), f.value.to_vec(), f.static_index)))
//!     .unwrap();
//! assert_eq!(fields[0], (b":status".to_vec(), b"200".to_vec(), Some(8)));
//! assert_eq!(fields[1], (b"content-type".to_vec(), b"text/plain".to_vec(), Some(31)));
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod decoder;
mod dynamic_table;
mod encoder;
pub mod huffman;
mod integer;
pub mod static_table;

pub use decoder::{DEFAULT_MAX_STRING_LEN, Decoder};
pub use encoder::Encoder;

/// A decoding failure; the connection must be closed with COMPRESSION_ERROR.
///
/// After an error the decoder's dynamic table is out of sync with the peer's,
/// so the decoder must not be used again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The block ended inside an integer, a string, or a string's length.
    Truncated,
    /// An integer exceeded `u32::MAX` or used more than 5 continuation octets.
    IntegerOverflow,
    /// Index 0, or an index past the end of the static plus dynamic table.
    InvalidIndex,
    /// A Huffman string contained EOS, padding longer than 7 bits, or padding
    /// that was not all 1s.
    InvalidHuffman,
    /// A dynamic table size update exceeded the advertised
    /// SETTINGS_HEADER_TABLE_SIZE, or a required update (after that setting
    /// was lowered, RFC 7541 §4.2) was missing.
    TableSizeUpdateTooLarge,
    /// A dynamic table size update came after a header field of the block.
    TableSizeUpdateNotAtStart,
    /// A name or value (after Huffman decoding) exceeded the decoder's
    /// string length limit ([`Decoder::set_max_string_len`]).
    StringTooLong,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Error::Truncated => "hpack: header block truncated",
            Error::IntegerOverflow => "hpack: integer overflow",
            Error::InvalidIndex => "hpack: invalid table index",
            Error::InvalidHuffman => "hpack: invalid huffman string",
            Error::TableSizeUpdateTooLarge => {
                "hpack: dynamic table size update missing or above the advertised limit"
            }
            Error::TableSizeUpdateNotAtStart => {
                "hpack: dynamic table size update after a header field"
            }
            Error::StringTooLong => "hpack: string longer than the limit",
        })
    }
}

impl std::error::Error for Error {}

/// One decoded header field, borrowed from the decoder (valid during the callback).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    /// The header name as sent (HTTP/2 requires lowercase; not checked here).
    pub name: &'a [u8],
    /// The header value as sent (not validated here).
    pub value: &'a [u8],
    /// 1..=61 when the name came from the static table (lets callers map
    /// known names without parsing). Several indices share a name (2-3
    /// `:method`, 4-5 `:path`, 6-7 `:scheme`, 8-14 `:status`); see
    /// [`static_table::get`]. A dynamic-table entry whose name was itself
    /// referenced from the static table keeps that index.
    pub static_index: Option<u8>,
    /// The sender marked the field "never indexed" (keep it out of any
    /// compression context when forwarding).
    pub never_indexed: bool,
}
