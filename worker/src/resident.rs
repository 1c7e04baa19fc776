//! The embedded model's explanation tables, and their memory lent to a registry model.
//!
//! A pooling host (Spin) keeps the first 2 MiB of an instance's linear memory resident between
//! instances and resets it by copying; everything above is handed back to the kernel when an
//! instance ends, so a fresh instance faults it in again page by page (~1 µs per 4 KiB under
//! Spin). The embedded model and its tables sit in those 2 MiB (`build.rs` keeps the stack
//! small for that). A registry model's bundle does not: read from the key-value store, it
//! would land in fresh heap, ~170 page faults for a 50-tree model, most of what starting on it
//! costs.
//!
//! An instance serves one or the other, so the tables' memory serves both. When an instance
//! starts on a registry model, the key-value store's answer for the first part of its bundle
//! is received into the tables' memory instead of fresh heap: the host asks the component's
//! allocator for a buffer of exactly the value's length to hand the value over, and while
//! [`offered_to`] waits for that value, an allocation of that length is answered with this
//! memory. The embedded model then builds its tables if it is ever served again (a rollback,
//! a refused copy). Which of the two the memory holds is decided once per instance
//! ([`embedded_tables`] or the first allocation answered), and the host resets it from the
//! component's image when the instance ends. The memory is at least one bundle part
//! (`worker_core::BUNDLE_PART_BYTES`, zeros after smaller tables), so any registry model's
//! first part fits; if the host ever hands a value over differently, the value simply lands
//! in the heap as before.

// The allocator is the component's only (`lib.rs`); a native build of this crate (clippy,
// docs) does not install it.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering::Relaxed};

const TABLES_LEN: usize = include_bytes!(env!("SFE_TABLES_FILE")).len();
/// Zeros after the tables, so that any registry bundle's first part fits even when the
/// embedded model is smaller (the component then carries them in its data segment).
const SPARE: usize = worker_core::BUNDLE_PART_BYTES.saturating_sub(TABLES_LEN);
const LEN: usize = TABLES_LEN + SPARE;

/// The tables as `build.rs` wrote them (8-byte aligned, so their arrays are used in place),
/// then the spare bytes; writable, because they may be lent out.
#[repr(C, align(8))]
struct Memory(UnsafeCell<Bytes>);

#[repr(C)]
struct Bytes {
    tables: [u8; TABLES_LEN],
    spare: [u8; SPARE],
}

// SAFETY: WebAssembly instances are single-threaded; access is arbitrated by `STATE`.
unsafe impl Sync for Memory {}

static TABLES: Memory = Memory(UnsafeCell::new(Bytes {
    tables: *include_bytes!(env!("SFE_TABLES_FILE")),
    spare: [0; SPARE],
}));

/// Nobody has the memory yet.
const FREE: u8 = 0;
/// It holds the embedded tables, for good.
const TABLES_KEPT: u8 = 1;
/// It is offered to the next allocation of `OFFERED` bytes (a value being received).
const OFFERED: u8 = 2;
/// It was handed to an allocation, for good.
const LENT: u8 = 3;

static STATE: AtomicU8 = AtomicU8::new(FREE);
static OFFERED_LEN: AtomicUsize = AtomicUsize::new(0);

/// The embedded tables, unless their memory was lent; from then on it stays theirs.
pub(crate) fn embedded_tables() -> Option<&'static [u8]> {
    match STATE.compare_exchange(FREE, TABLES_KEPT, Relaxed, Relaxed) {
        Ok(_) | Err(TABLES_KEPT) => {
            // SAFETY: the memory is theirs for good (`TABLES_KEPT`): nothing writes it again.
            Some(unsafe { &(*TABLES.0.get()).tables })
        }
        Err(_) => None,
    }
}

/// Runs `receive` with the memory offered to an allocation of exactly `len` bytes (the
/// buffer the host asks for to hand over a value of that length), when it is free and large
/// enough. If no such allocation came, it is free again afterwards.
pub(crate) async fn offered_to<T>(len: usize, receive: impl Future<Output = T>) -> T {
    let offered = len > 0
        && len <= LEN
        && STATE
            .compare_exchange(FREE, OFFERED, Relaxed, Relaxed)
            .is_ok();
    if offered {
        OFFERED_LEN.store(len, Relaxed);
    }
    let value = receive.await;
    if offered {
        let _ = STATE.compare_exchange(OFFERED, FREE, Relaxed, Relaxed);
    }
    value
}

fn is_lent(ptr: *mut u8) -> bool {
    let start = TABLES.0.get().cast::<u8>();
    ptr >= start && ptr < start.wrapping_add(LEN)
}

/// The system allocator, but for one allocation while the memory is offered.
pub(crate) struct Allocator;

// SAFETY: every block is System's, except the lent memory, which is valid for `LEN >= size`
// bytes, 8-byte aligned, handed out at most once and never given back to System.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= 8
            && layout.size() == OFFERED_LEN.load(Relaxed)
            && STATE
                .compare_exchange(OFFERED, LENT, Relaxed, Relaxed)
                .is_ok()
        {
            return TABLES.0.get().cast();
        }
        // SAFETY: forwarded as given.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !is_lent(ptr) {
            // SAFETY: System's block, as given.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !is_lent(ptr) {
            // SAFETY: System's block, as given.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: `new_size` is non-zero and, rounded up to the alignment, fits in isize (the
        // caller's contract); the block is then System's with the layout the caller will give.
        let moved =
            unsafe { System.alloc(Layout::from_size_align_unchecked(new_size, layout.align())) };
        if !moved.is_null() {
            // SAFETY: both blocks hold at least the bytes copied; they do not overlap.
            unsafe { std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size)) };
        }
        moved
    }
}
