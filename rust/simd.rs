//! Run-time choice of AVX2 code for the hot loops.
//!
//! `avx2_or_baseline!` defines a function whose body is compiled twice: once for the
//! baseline target and once with AVX2 enabled (where LLVM vectorizes 8 lanes wide, with
//! `vpmaxud`, variable shifts and 256-bit divisions). The AVX2 copy runs where the CPU has
//! it (std caches the check). Both copies perform the same IEEE operations in the same order
//! (Rust never contracts `a * b + c` into an FMA), so the results are the same bits.

/// Define `fn NAME<const ..>(ARGS) -> RET { BODY }` with a baseline and an AVX2 copy of
/// `BODY`, chosen at run time.
macro_rules! avx2_or_baseline {
    (
        $(#[$meta:meta])*
        $vis:vis fn $name:ident $(<$(const $c:ident: $ct:ty),*>)? ($($arg:ident: $ty:ty),* $(,)?)
        $(-> $ret:ty)? $body:block
    ) => {
        $(#[$meta])*
        $vis fn $name $(<$(const $c: $ct),*>)? ($($arg: $ty),*) $(-> $ret)? {
            #[allow(clippy::too_many_arguments)]
            #[inline(always)]
            fn body $(<$(const $c: $ct),*>)? ($($arg: $ty),*) $(-> $ret)? $body

            #[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
            #[allow(clippy::too_many_arguments)]
            #[target_feature(enable = "avx2")]
            unsafe fn avx2 $(<$(const $c: $ct),*>)? ($($arg: $ty),*) $(-> $ret)? {
                body $(::<$($c),*>)? ($($arg),*)
            }

            #[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2, checked just above.
                return unsafe { avx2 $(::<$($c),*>)? ($($arg),*) };
            }
            body $(::<$($c),*>)? ($($arg),*)
        }
    };
}

pub(crate) use avx2_or_baseline;
