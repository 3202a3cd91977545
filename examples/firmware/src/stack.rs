//! Peak stack by painting: fill the free RAM between the statics and the
//! stack pointer with a pattern, run, then find the lowest word the stack
//! overwrote.
//!
//! This is the only module with `unsafe`: it writes and reads RAM that no
//! Rust value owns (between cortex-m-rt's `_stack_end`, the end of the
//! statics, and the current stack pointer).

use core::ptr::{addr_of, read_volatile, write_volatile};

const PAINT: u32 = 0xC0FF_EE55;

extern "C" {
    // Provided by cortex-m-rt's link.x: the lowest address the stack may
    // grow to (the end of .bss/.uninit) and its initial top.
    static _stack_end: u32;
    static _stack_start: u32;
}

fn bottom() -> usize {
    // Taking the address of an extern static is safe; reading it is not.
    addr_of!(_stack_end) as usize
}

/// The initial stack pointer (top of RAM).
pub fn top() -> usize {
    addr_of!(_stack_start) as usize
}

/// Paints every word below this function's own frame.
#[inline(never)]
pub fn paint() {
    let sp = cortex_m::register::msp::read() as usize;
    // The stack pointer may be read before this function pushes its own
    // frame: keep clear of the 64 bytes below it (the measure can only
    // over-count by that much).
    let end = sp.saturating_sub(64) & !3;
    let mut p = bottom();
    while p < end {
        // SAFETY: [bottom, end) is RAM below the live stack and above every
        // static; nothing owns it.
        unsafe { write_volatile(p as *mut u32, PAINT) };
        p += 4;
    }
}

/// The deepest the stack has been since the last [`paint`], in bytes
/// below its top.
#[inline(never)]
pub fn peak() -> usize {
    let mut p = bottom();
    let sp = cortex_m::register::msp::read() as usize;
    while p < sp {
        // SAFETY: as in `paint`; reads only.
        if unsafe { read_volatile(p as *const u32) } != PAINT {
            break;
        }
        p += 4;
    }
    top() - p
}

/// The current depth of the stack, in bytes below its top.
#[inline(always)]
pub fn depth() -> usize {
    top() - cortex_m::register::msp::read() as usize
}

/// Bytes between the end of the statics and the top of the stack.
pub fn room() -> usize {
    top() - bottom()
}
