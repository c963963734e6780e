//! Header block decoding (RFC 7541 §3, §6).
//!
//! Fields are handed to a callback as slices borrowed from the block (raw
//! strings), the static table, the dynamic table, or one of two scratch
//! buffers (Huffman strings), so a warmed-up decoder allocates only when it
//! inserts into the dynamic table.

use crate::dynamic_table::{DynamicTable, Resolved};
use crate::{Error, Field, huffman, integer, static_table};

/// Default longest name or value [`Decoder`] accepts, in octets after
/// Huffman decoding (1 MiB). HTTP/2 servers normally enforce a smaller header
/// list limit themselves; raise it with [`Decoder::set_max_string_len`].
pub const DEFAULT_MAX_STRING_LEN: usize = 1 << 20;

/// Decodes header blocks from one peer; keep one per connection direction.
#[derive(Debug)]
pub struct Decoder {
    table: DynamicTable,
    /// SETTINGS_HEADER_TABLE_SIZE as advertised (and acknowledged).
    max_allowed: usize,
    /// The advertised limit was lowered below the table's capacity: the next
    /// block must start with a size update (RFC 7541 §4.2).
    update_required: bool,
    max_string_len: usize,
    name_buf: Vec<u8>,
    value_buf: Vec<u8>,
}

impl Decoder {
    /// `max_table_size`: the SETTINGS_HEADER_TABLE_SIZE this side advertised; dynamic table size updates above it are errors.
    ///
    /// The dynamic table starts at that size, as RFC 7541 §4.2 prescribes.
    pub fn new(max_table_size: usize) -> Decoder {
        Decoder {
            table: DynamicTable::new(max_table_size),
            max_allowed: max_table_size,
            update_required: false,
            max_string_len: DEFAULT_MAX_STRING_LEN,
            name_buf: Vec::new(),
            value_buf: Vec::new(),
        }
    }

    /// Changes the advertised SETTINGS_HEADER_TABLE_SIZE; call it when the
    /// peer acknowledges a SETTINGS frame that changed it. If the new limit is
    /// below the table's current maximum, the next header block must begin
    /// with a size update to at most the new limit (RFC 7541 §4.2), else
    /// [`decode`](Self::decode) fails with [`Error::TableSizeUpdateTooLarge`].
    pub fn set_max_table_size(&mut self, max_table_size: usize) {
        self.max_allowed = max_table_size;
        self.update_required = max_table_size < self.table.capacity();
    }

    /// Sets the longest name or value accepted (after Huffman decoding);
    /// longer strings fail with [`Error::StringTooLong`]. Defaults to
    /// [`DEFAULT_MAX_STRING_LEN`].
    pub fn set_max_string_len(&mut self, max_string_len: usize) {
        self.max_string_len = max_string_len;
    }

    /// Decodes one complete header block (HEADERS + CONTINUATION payloads concatenated), calling `emit` for each field in order.
    /// Always processes the whole block (so the dynamic table stays in sync) unless it is invalid.
    /// Dynamic table size updates are only allowed before the first field of a block.
    ///
    /// After an error the decoder is out of sync with the peer and the
    /// connection must be closed.
    pub fn decode(&mut self, block: &[u8], mut emit: impl FnMut(Field<'_>)) -> Result<(), Error> {
        let Decoder {
            table,
            max_allowed,
            update_required,
            max_string_len,
            name_buf,
            value_buf,
        } = self;
        let max_len = *max_string_len;
        let mut pos = 0;
        let mut at_start = true;
        while let Some(&first) = block.get(pos) {
            if first & 0xe0 == 0x20 {
                // 001xxxxx: dynamic table size update (§6.3).
                if !at_start {
                    return Err(Error::TableSizeUpdateNotAtStart);
                }
                let size = integer::decode(block, &mut pos, 5)?;
                if size > *max_allowed {
                    return Err(Error::TableSizeUpdateTooLarge);
                }
                table.set_capacity(size);
                *update_required = false;
                continue;
            }
            if at_start {
                if *update_required {
                    return Err(Error::TableSizeUpdateTooLarge);
                }
                at_start = false;
            }
            if first & 0x80 != 0 {
                // 1xxxxxxx: indexed header field (§6.1).
                let index = integer::decode(block, &mut pos, 7)?;
                let (name, value, static_index) = lookup(table, index)?;
                emit(Field {
                    name,
                    value,
                    static_index,
                    never_indexed: false,
                });
            } else if first & 0x40 != 0 {
                // 01xxxxxx: literal with incremental indexing (§6.2.1).
                let (name, value, static_index) =
                    literal(table, block, &mut pos, 6, name_buf, value_buf, max_len)?;
                let entry = table.prepare(name, value, static_index);
                emit(Field {
                    name,
                    value,
                    static_index,
                    never_indexed: false,
                });
                table.insert(entry);
            } else {
                // 0000xxxx without indexing (§6.2.2), 0001xxxx never indexed (§6.2.3).
                let (name, value, static_index) =
                    literal(table, block, &mut pos, 4, name_buf, value_buf, max_len)?;
                emit(Field {
                    name,
                    value,
                    static_index,
                    never_indexed: first & 0x10 != 0,
                });
            }
        }
        Ok(())
    }

    /// Current dynamic table size in octets (RFC 7541 §4.1 accounting: name + value + 32 per entry), for tests and introspection.
    pub fn table_size(&self) -> usize {
        self.table.size()
    }

    /// Number of entries in the dynamic table, for tests and introspection.
    pub fn table_len(&self) -> usize {
        self.table.len()
    }

    /// Dynamic table entry `index` as `(name, value)`, numbered like RFC 7541
    /// Appendix C (1 = newest); `None` past the end. For tests and
    /// introspection.
    pub fn table_entry(&self, index: usize) -> Option<(&[u8], &[u8])> {
        let (name, value, _) = self.table.get(index.checked_sub(1)?)?;
        Some((name, value))
    }
}

/// Resolves an index into the static table (1..=61) or the dynamic table
/// (62.. = newest first), in O(1).
#[inline]
fn lookup(table: &DynamicTable, index: usize) -> Result<Resolved<'_>, Error> {
    if index <= static_table::LEN {
        let (name, value) = static_table::get(index).ok_or(Error::InvalidIndex)?;
        Ok((name, value, Some(index as u8)))
    } else {
        table
            .get(index - static_table::LEN - 1)
            .ok_or(Error::InvalidIndex)
    }
}

/// Reads a literal's name index (or literal name) and value.
#[inline]
fn literal<'a>(
    table: &'a DynamicTable,
    block: &'a [u8],
    pos: &mut usize,
    prefix_bits: u32,
    name_buf: &'a mut Vec<u8>,
    value_buf: &'a mut Vec<u8>,
    max_len: usize,
) -> Result<Resolved<'a>, Error> {
    let index = integer::decode(block, pos, prefix_bits)?;
    let (name, static_index) = if index == 0 {
        (string(block, pos, name_buf, max_len)?, None)
    } else {
        let (name, _, static_index) = lookup(table, index)?;
        (name, static_index)
    };
    let value = string(block, pos, value_buf, max_len)?;
    Ok((name, value, static_index))
}

/// Reads a string literal (§5.2): borrowed from the block when raw, decoded
/// into `buf` when Huffman-coded. The length is checked against the block
/// before anything else.
#[inline]
fn string<'a>(
    block: &'a [u8],
    pos: &mut usize,
    buf: &'a mut Vec<u8>,
    max_len: usize,
) -> Result<&'a [u8], Error> {
    let huffman = block.get(*pos).ok_or(Error::Truncated)? & 0x80 != 0;
    let len = integer::decode(block, pos, 7)?;
    let start = *pos;
    let raw = block
        .get(start..)
        .and_then(|rest| rest.get(..len))
        .ok_or(Error::Truncated)?;
    *pos = start + len;
    if !huffman {
        return if len > max_len {
            Err(Error::StringTooLong)
        } else {
            Ok(raw)
        };
    }
    buf.clear();
    huffman::decode(raw, buf)?;
    if buf.len() > max_len {
        return Err(Error::StringTooLong);
    }
    Ok(buf)
}
