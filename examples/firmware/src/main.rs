//! bft-upgrade on a Cortex-M4F: one role on a fixed test bundle, with no
//! heap, run under QEMU (mps2-an386) by `.ci/run` and `footprint.sh`.
//!
//! The role is chosen at build time (features `role-group`, the default,
//! `role-installer`, `role-guardian`, `role-client`, `role-none`), so each
//! build links only what that role needs and its section sizes are that
//! role's footprint. The run prints `@ key value` lines over semihosting
//! (sizes, instruction counts, peak stack) and exits with success only if
//! every check passed.
#![no_std]
#![no_main]

#[cfg(any(
    all(feature = "role-group", any(feature = "role-installer", feature = "role-guardian", feature = "role-client")),
    all(feature = "role-installer", any(feature = "role-guardian", feature = "role-client")),
    all(feature = "role-guardian", feature = "role-client"),
    all(feature = "role-none", any(feature = "role-group", feature = "role-installer")),
    all(feature = "role-none", any(feature = "role-guardian", feature = "role-client")),
))]
compile_error!("choose one role feature (use --no-default-features for a role other than role-group)");

mod meter;
mod stack;

#[cfg(feature = "role-client")]
mod client;
#[cfg(feature = "role-group")]
mod group;
#[cfg(feature = "role-guardian")]
mod guardian;
#[cfg(feature = "role-installer")]
mod installer;

use core::sync::atomic::{AtomicUsize, Ordering};

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};

use meter::Meter;

/// One `@ key value` line for the footprint script.
macro_rules! report {
    ($key:expr, $value:expr) => {
        cortex_m_semihosting::hprintln!("@ {} {}", $key, $value)
    };
}
#[allow(unused_imports)] // not every role reports sizes
pub(crate) use report;

/// Why a run failed.
pub type Failure = &'static str;

/// Turns any error into a [`Failure`] naming the step.
pub trait Context<T> {
    /// `Err(what)` on any error.
    fn or_fail(self, what: Failure) -> Result<T, Failure>;
}

impl<T, E> Context<T> for Result<T, E> {
    fn or_fail(self, what: Failure) -> Result<T, Failure> {
        self.map_err(|_| what)
    }
}

impl<T> Context<T> for Option<T> {
    fn or_fail(self, what: Failure) -> Result<T, Failure> {
        self.ok_or(what)
    }
}

/// Fails with `what` unless `cond`.
pub fn ensure(cond: bool, what: Failure) -> Result<(), Failure> {
    if cond {
        Ok(())
    } else {
        Err(what)
    }
}

/// The deepest stack any phase reached, in bytes below the top.
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// A measured phase: its instructions, and the stack it used below the
/// caller's frame (`stack.<name>`; the harness's own frames above are not
/// counted, the whole run's peak is `stack.peak`).
///
/// Put the work in an `#[inline(never)]` function called from `f`, so its
/// temporaries are in its own frame and not in the caller's.
pub fn phase<T>(meter: &Meter, name: &str, f: impl FnOnce() -> T) -> T {
    counted_phase(meter, name, f).1
}

/// [`phase`], returning its instruction count too.
pub fn counted_phase<T>(meter: &Meter, name: &str, f: impl FnOnce() -> T) -> (u64, T) {
    stack::paint();
    let depth = stack::depth();
    let (instructions, r) = meter.measure(f);
    hprintln!("@ instr.{} {}", name, instructions);
    let peak = stack::peak();
    PEAK.fetch_max(peak, Ordering::Relaxed);
    hprintln!("@ stack.{} {}", name, peak.saturating_sub(depth));
    (instructions, r)
}

#[entry]
fn main() -> ! {
    stack::paint();
    let Some(p) = cortex_m::Peripherals::take() else { exit(Err("peripherals")) };
    let meter = Meter::new(p.SYST, p.DCB, p.DWT);
    report!("role", role());
    report!("dwt.cyccnt", if meter.dwt_works { "counts" } else { "absent" });
    report!("meter.instr_per_tick_x1024", meter.per_tick_x1024());
    report!("stack.room", stack::room());
    let result = run(&meter);
    report!("stack.peak", PEAK.load(Ordering::Relaxed).max(stack::peak()));
    exit(result)
}

fn role() -> &'static str {
    if cfg!(feature = "role-group") {
        "group"
    } else if cfg!(feature = "role-installer") {
        "installer"
    } else if cfg!(feature = "role-guardian") {
        "guardian"
    } else if cfg!(feature = "role-client") {
        "client"
    } else {
        "none"
    }
}

#[inline(never)]
fn run(meter: &Meter) -> Result<(), Failure> {
    let _ = meter;
    #[cfg(feature = "role-group")]
    group::run(meter)?;
    #[cfg(feature = "role-installer")]
    installer::run(meter)?;
    #[cfg(feature = "role-guardian")]
    guardian::run(meter)?;
    #[cfg(feature = "role-client")]
    client::run(meter)?;
    Ok(())
}

fn exit(result: Result<(), Failure>) -> ! {
    match result {
        Ok(()) => {
            hprintln!("firmware: {} role ok", role());
            debug::exit(debug::EXIT_SUCCESS);
        }
        Err(what) => {
            hprintln!("firmware: {} role FAILED: {}", role(), what);
            debug::exit(debug::EXIT_FAILURE);
        }
    }
    // Not reached under QEMU; on hardware without a debugger, park.
    loop {
        cortex_m::asm::wfi();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    hprintln!("firmware: panic: {}", info);
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}
