//! Checks the allocation claims with a counting global allocator: a warmed-up
//! decoder allocates nothing per field (Huffman strings included) unless it
//! inserts into the dynamic table, and the encoder allocates nothing beyond
//! growing the caller's `Vec`.
//!
//! Its own test binary (one test) so the allocator sees nothing else.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use meshwork_hpack::{Decoder, Encoder};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards every call unchanged to the system allocator; it only
// counts (in a const-initialized thread-local without a destructor).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn no_allocation_per_field() {
    // The counter works.
    let before = allocations();
    std::hint::black_box(vec![1u8; 16]);
    assert!(allocations() > before);

    // RFC 7541 C.4.1-C.4.3 (Huffman): inserts allocate, nothing else does.
    let blocks = [
        hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"),
        hex("8286 84be 5886 a8eb 1064 9cbf"),
        hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"),
    ];
    let mut d = Decoder::new(4096);
    for block in &blocks {
        d.decode(block, |_| {}).unwrap();
    }
    // Indexed fields (static and dynamic) plus Huffman literals without
    // indexing (04 = :path, 0f 10 = content-type), after warm-up.
    let block = hex(
        "8287 85bf bebe c0 0488 25a8 49e9 5ba9 7d7f 0f10 8925 a849 e95b b8e8 b4bf 1084 f1e3 c2e5 86a8 eb10 649c bf",
    );
    let mut seen = 0;
    d.decode(&block, |_| seen += 1).unwrap();
    let before = allocations();
    for _ in 0..100 {
        d.decode(&block, |f| {
            std::hint::black_box(f);
        })
        .unwrap();
    }
    assert_eq!(allocations() - before, 0, "decoder allocated");
    assert_eq!(seen, 10);

    // Encoder: only growing the caller's Vec allocates.
    let mut e = Encoder::new();
    let mut dst = Vec::with_capacity(4096);
    let before = allocations();
    for _ in 0..10 {
        e.encode_status(200, &mut dst);
        e.encode_status(302, &mut dst);
        e.encode(b":method", b"GET", false, &mut dst);
        e.encode(b"content-type", b"application/grpc", false, &mut dst);
        e.encode(b"x-request-id", b"0123456789abcdef", false, &mut dst);
        e.encode(b"authorization", b"Bearer secret", true, &mut dst);
    }
    assert_eq!(allocations() - before, 0, "encoder allocated");
    assert!(dst.len() < 4096);
}
