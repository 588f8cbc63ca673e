//! `cargo xtask fuzz backends`: the body is `lutq_fuzz::Backends::check` (crates/fuzz):
//! interpreter vs JIT per input, generated C once per batch of programs.
#![no_main]

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use lutq_fuzz::Backends;

/// Programs per C compilation (`LUTQ_FUZZ_C_BATCH` overrides).
const BATCH: usize = 32;
/// Every how many programs one is also compared with C (`LUTQ_FUZZ_C_EVERY` overrides;
/// 1 compares all, at ~0.1 s of C compiler per program).
const C_EVERY: usize = 16;

static STATE: Mutex<Option<Backends>> = Mutex::new(None);
/// The program count at which the next progress line is printed (every 1024).
static NEXT_REPORT: AtomicUsize = AtomicUsize::new(1024);

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
    let backends = state.get_or_insert_with(|| {
        let batch = std::env::var("LUTQ_FUZZ_C_BATCH")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(BATCH);
        let mut b = Backends::new(batch);
        b.c_every = std::env::var("LUTQ_FUZZ_C_EVERY")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(C_EVERY);
        b
    });
    backends.check(data);
    let n = backends.programs;
    if n >= NEXT_REPORT.load(Ordering::Relaxed) {
        NEXT_REPORT.store(n + 1024, Ordering::Relaxed);
        eprintln!(
            "lutq: {n} programs (interp vs JIT), {} also vs C, {} invalid drawn",
            backends.programs_c, backends.invalid
        );
    }
});
