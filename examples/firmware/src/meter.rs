//! Counting instructions under QEMU.
//!
//! QEMU does not emulate the DWT cycle counter on mps2-an386 (its registers
//! read as zero), so the SysTick is the clock: reload `0xFF_FFFF`, clocked
//! by the core clock (25 MHz on this board), an exception per wrap to extend
//! it to 64 bits. With `-icount shift=0` emulated time advances exactly
//! 1 ns per instruction, so one SysTick tick is 40 instructions; that factor
//! is not assumed but calibrated at start on a loop of known length.

use core::arch::asm;
use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::{DCB, DWT, SYST};
use cortex_m_rt::exception;

/// SysTick reload: the full 24-bit range.
const RELOAD: u32 = 0x00FF_FFFF;

/// SysTick wraps so far.
static WRAPS: AtomicU32 = AtomicU32::new(0);

#[exception]
fn SysTick() {
    WRAPS.fetch_add(1, Ordering::Relaxed);
}

/// The instruction meter.
pub struct Meter {
    syst: SYST,
    /// Instructions per SysTick tick, times 1024 (calibrated).
    per_tick_x1024: u64,
    /// Whether DWT CYCCNT counted anything when probed.
    pub dwt_works: bool,
}

/// Loop iterations of the calibration (2 instructions each).
const CALIBRATION_LOOPS: u32 = 1_000_000;

impl Meter {
    /// Starts the SysTick and calibrates it.
    pub fn new(mut syst: SYST, mut dcb: DCB, mut dwt: DWT) -> Self {
        // DWT CYCCNT first: on hardware it is the cycle count.
        dcb.enable_trace();
        DWT::unlock();
        dwt.enable_cycle_counter();
        let before = DWT::cycle_count();
        spin(1000);
        let dwt_works = DWT::cycle_count() != before;

        syst.set_clock_source(SystClkSource::Core);
        syst.set_reload(RELOAD);
        syst.clear_current();
        syst.enable_interrupt();
        syst.enable_counter();
        let mut meter = Self { syst, per_tick_x1024: 0, dwt_works };
        // QEMU loads the counter from the reload value only at the first
        // tick after enabling; start measuring once it runs.
        while SYST::get_current() == 0 {
            spin(16);
        }
        let t0 = meter.ticks();
        spin(CALIBRATION_LOOPS);
        let ticks = meter.ticks().saturating_sub(t0).max(1);

        meter.per_tick_x1024 = u64::from(CALIBRATION_LOOPS) * 2 * 1024 / ticks;
        meter
    }

    /// Instructions per SysTick tick, as calibrated (x1024).
    pub fn per_tick_x1024(&self) -> u64 {
        self.per_tick_x1024
    }

    /// SysTick ticks since start, 64-bit.
    pub fn ticks(&self) -> u64 {
        loop {
            let w1 = WRAPS.load(Ordering::Relaxed);
            let current = SYST::get_current();
            let pending = self.syst.has_wrapped_peek();
            let w2 = WRAPS.load(Ordering::Relaxed);
            if w1 == w2 && !pending {
                return u64::from(w1) * (u64::from(RELOAD) + 1) + u64::from(RELOAD - current);
            }
        }
    }

    /// Instructions since start (calibrated ticks).
    pub fn instructions(&self) -> u64 {
        self.ticks() * self.per_tick_x1024 / 1024
    }

    /// Instructions `f` takes, and its result.
    pub fn measure<T>(&self, f: impl FnOnce() -> T) -> (u64, T) {
        let t0 = self.instructions();
        let r = f();
        (self.instructions().saturating_sub(t0), r)
    }
}

trait Peek {
    fn has_wrapped_peek(&self) -> bool;
}

impl Peek for SYST {
    /// Whether a wrap is pending its exception. Reading COUNTFLAG clears
    /// it, so this looks at the SysTick's pending bit in the ICSR instead.
    fn has_wrapped_peek(&self) -> bool {
        cortex_m::peripheral::SCB::is_pendst_pending()
    }
}

/// Exactly `2 * n` instructions (`subs` and `bne` per iteration).
#[inline(never)]
fn spin(n: u32) {
    // SAFETY: register-only loop; touches no memory and no stack.
    unsafe {
        asm!(
            "2:",
            "subs {0}, {0}, #1",
            "bne 2b",
            inout(reg) n => _,
            options(nomem, nostack),
        );
    }
}
