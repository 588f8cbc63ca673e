//! Run-time selection of the instruction set for hand-written hot loops.
//!
//! The workspace builds for baseline x86-64 (SSE2) so that binaries run anywhere; the few
//! loops that are compute-bound outside the GEMM (depthwise convolution) are compiled a
//! second and third time with AVX2+FMA and AVX-512 enabled, and the best version the CPU
//! supports is picked at run time. The bodies never call `mul_add`, so every version
//! rounds identically (LLVM does not contract `a * b + c` into an FMA on its own): results
//! do not depend on the machine's CPU.

/// Defines a function whose body is compiled for x86-64-v4 (AVX-512), v3 (AVX2 + FMA) and
/// the baseline, dispatching on the running CPU. Arguments must be plain identifiers and
/// the function cannot be generic.
macro_rules! multiversion {
    ($(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        $(#[$attr])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body($($arg: $ty),*) $body

            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn v4($($arg: $ty),*) {
                    body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn v3($($arg: $ty),*) {
                    body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                {
                    // SAFETY: the CPU supports every feature `v4` is compiled for.
                    return unsafe { v4($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: as above, for `v3`.
                    return unsafe { v3($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

pub(crate) use multiversion;
