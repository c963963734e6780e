//! The Huffman decoding state machine, built at compile time from [`CODES`].
//!
//! A state is an internal node of the code tree (256 of them for 257
//! symbols; the root is 0). Each transition consumes one 4-bit nibble: since
//! the shortest code is 5 bits, a nibble completes at most one symbol. The
//! whole table is 256 × 16 × 3 bytes = 12 KiB of static data, so decoding is
//! two table lookups per input octet with no branches on the code tree.
//!
//! Building it in a `const fn` means a code table that is not a complete
//! prefix code fails the build instead of misbehaving at run time.
//!
//! The decoder itself uses [`byte_table`], derived from the nibble machine
//! once per process: one lookup per input octet (at most two symbols) halves
//! the serial chain of dependent loads and measured about 2x faster.

use std::sync::OnceLock;

use super::codes::CODES;

/// Transition flag: the nibble completed a symbol, found in `sym`.
pub(super) const EMIT: u8 = 1;
/// Transition flag: the nibble completed EOS, which must never appear.
pub(super) const FAIL: u8 = 2;

/// What one nibble does from one state.
#[derive(Clone, Copy)]
pub(super) struct Transition {
    /// The state after the nibble.
    pub(super) next: u8,
    /// [`EMIT`] and/or [`FAIL`].
    pub(super) flags: u8,
    /// The completed symbol when `flags` has [`EMIT`].
    pub(super) sym: u8,
}

/// The decoder tables: transitions plus which states may end a string.
pub(super) struct Machine {
    /// `table[state][nibble]`.
    pub(super) table: [[Transition; 16]; 256],
    /// A string may end in this state: it is the root, or its path from the
    /// root is 1 to 7 one-bits (valid padding, RFC 7541 §5.2).
    pub(super) accept: [bool; 256],
}

/// The one decoder machine.
pub(super) static MACHINE: Machine = build();

/// Child slot values: 0 = empty, `LEAF | sym` = symbol, else a node number.
const LEAF: u16 = 0x8000;

const fn build() -> Machine {
    // The code tree: children of each internal node.
    let mut kids = [[0u16; 2]; 256];
    let mut depth = [0u8; 256];
    let mut all_ones = [false; 256];
    all_ones[0] = true;
    let mut nodes = 1usize;

    let mut sym = 0;
    while sym < CODES.len() {
        let (code, len) = CODES[sym];
        assert!(len >= 5 && len <= 30, "code length out of range");
        let mut node = 0usize;
        let mut bit_index = len;
        while bit_index > 1 {
            bit_index -= 1;
            let bit = ((code >> bit_index) & 1) as usize;
            let child = kids[node][bit];
            if child == 0 {
                assert!(nodes < 256, "too many internal nodes");
                kids[node][bit] = nodes as u16;
                depth[nodes] = depth[node] + 1;
                all_ones[nodes] = all_ones[node] && bit == 1;
                node = nodes;
                nodes += 1;
            } else {
                assert!(child & LEAF == 0, "code is not prefix-free");
                node = child as usize;
            }
        }
        let bit = (code & 1) as usize;
        assert!(kids[node][bit] == 0, "code is not prefix-free");
        assert!(code >> len == 0, "code wider than its length");
        kids[node][bit] = LEAF | sym as u16;
        sym += 1;
    }
    assert!(nodes == 256, "code is not complete");

    let mut table = [[Transition {
        next: 0,
        flags: 0,
        sym: 0,
    }; 16]; 256];
    let mut accept = [false; 256];
    let mut state = 0;
    while state < 256 {
        accept[state] = all_ones[state] && depth[state] <= 7;
        let mut nibble = 0;
        while nibble < 16 {
            let mut node = state;
            let mut flags = 0;
            let mut out = 0u8;
            let mut shift = 4;
            while shift > 0 {
                shift -= 1;
                let child = kids[node][(nibble >> shift) & 1];
                assert!(child != 0, "code is not complete");
                if child & LEAF == 0 {
                    node = child as usize;
                } else if child & !LEAF == 256 {
                    flags = FAIL;
                    node = 0;
                    break;
                } else {
                    // At most one symbol per nibble: codes are >= 5 bits.
                    assert!(flags & EMIT == 0, "two symbols in one nibble");
                    flags |= EMIT;
                    out = (child & !LEAF) as u8;
                    node = 0;
                }
            }
            table[state][nibble] = Transition {
                next: node as u8,
                flags,
                sym: out,
            };
            nibble += 1;
        }
        state += 1;
    }
    Machine { table, accept }
}

/// Byte-table entry field: the next state (bits 0-7).
pub(super) const BYTE_NEXT_MASK: u32 = 0xff;
/// Byte-table entry field: number of completed symbols, 0..=2 (bits 8-9).
pub(super) const BYTE_COUNT_SHIFT: u32 = 8;
/// Byte-table entry flag: the octet completed EOS (bit 10).
pub(super) const BYTE_FAIL: u32 = 1 << 10;
/// Byte-table entry fields: first and second symbol (bits 16-23, 24-31).
pub(super) const BYTE_SYM1_SHIFT: u32 = 16;
/// See [`BYTE_SYM1_SHIFT`].
pub(super) const BYTE_SYM2_SHIFT: u32 = 24;

/// `table[state << 8 | octet]`: the nibble machine applied to a whole octet,
/// packed as described by the `BYTE_*` constants. 256 KiB, built on first use.
pub(super) fn byte_table() -> &'static [u32; 1 << 16] {
    static TABLE: OnceLock<Box<[u32; 1 << 16]>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = Box::new([0u32; 1 << 16]);
        for (i, entry) in table.iter_mut().enumerate() {
            let (state, octet) = (i >> 8, i & 0xff);
            let first = MACHINE.table[state][octet >> 4];
            let second = MACHINE.table[usize::from(first.next)][octet & 0x0f];
            let mut packed = u32::from(second.next);
            let mut count = 0;
            for t in [first, second] {
                if t.flags & EMIT != 0 {
                    let shift = if count == 0 {
                        BYTE_SYM1_SHIFT
                    } else {
                        BYTE_SYM2_SHIFT
                    };
                    packed |= u32::from(t.sym) << shift;
                    count += 1;
                }
                if t.flags & FAIL != 0 {
                    packed |= BYTE_FAIL;
                }
            }
            *entry = packed | (count << BYTE_COUNT_SHIFT);
        }
        table
    })
}
