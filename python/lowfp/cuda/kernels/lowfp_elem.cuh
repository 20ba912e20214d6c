// lowfp_elem.cuh — the per-element codec functions of lowfp, for CUDA and for plain C++17.
//
// Design notes
// - This header mirrors the *definitions* in the Rust core, element by element:
//   `rust/rng.rs` (Philox4x32-10 keyed by seed, stream, global index), `rust/exmy.rs`
//   (`Encoder::encode_one`, the general element function — not its float32 fast path, which a
//   Rust test holds equal to it), `rust/format.rs` (`decode_f64`), `rust/table.rs` (the
//   `nearest_ref` / `stochastic_ref` definitions of the table codecs), `rust/pack.rs` (the
//   LSB-first k-bit layout) and `rust/block.rs` (block scale rules). Section banners match the
//   Rust files so the two can be read side by side.
// - The same file compiles under NVRTC/nvcc (functions are `__host__ __device__`) and under
//   g++ -std=c++17, so CI checks it against the Rust core on every run without a GPU
//   (tests/test_cuda_host.py). Only builtin integer types are used: NVRTC has no <cstdint>.
// - Codec arithmetic is on integer bit patterns, as in Rust. Floats appear only where Rust
//   uses them (table midpoints and the stochastic fraction in f64, blockwise `x / s` in f32);
//   they are single IEEE operations, and the build turns contraction off (g++
//   -ffp-contract=off, NVRTC --fmad=false), so both sides round identically.
// - Rounding modes are template parameters (the kernels instantiate all six), like the
//   const-generic `MODE` of the Rust encoder.
#pragma once

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define LF_FN __host__ __device__ __forceinline__
#else
#define LF_FN inline
#endif

typedef unsigned char lf_u8;
typedef unsigned short lf_u16;
typedef unsigned int lf_u32;
typedef int lf_i32;
typedef unsigned long long lf_u64;
typedef long long lf_i64;

// ---------------------------------------------------------------- bit helpers

LF_FN lf_u32 lf_f32_bits(float x) {
#ifdef __CUDA_ARCH__
    return __float_as_uint(x);
#else
    lf_u32 b;
    __builtin_memcpy(&b, &x, 4);
    return b;
#endif
}

LF_FN float lf_f32_from_bits(lf_u32 b) {
#ifdef __CUDA_ARCH__
    return __uint_as_float(b);
#else
    float x;
    __builtin_memcpy(&x, &b, 4);
    return x;
#endif
}

LF_FN lf_u64 lf_f64_bits(double x) {
#ifdef __CUDA_ARCH__
    return (lf_u64)__double_as_longlong(x);
#else
    lf_u64 b;
    __builtin_memcpy(&b, &x, 8);
    return b;
#endif
}

LF_FN double lf_f64_from_bits(lf_u64 b) {
#ifdef __CUDA_ARCH__
    return __longlong_as_double((lf_i64)b);
#else
    double x;
    __builtin_memcpy(&x, &b, 8);
    return x;
#endif
}

/// Leading zeros of a 64-bit word (64 for 0).
LF_FN lf_i32 lf_clz64(lf_u64 x) {
#ifdef __CUDA_ARCH__
    return __clzll((lf_i64)x);
#else
    return x == 0 ? 64 : __builtin_clzll(x);
#endif
}

LF_FN lf_i32 lf_max_i32(lf_i32 a, lf_i32 b) { return a > b ? a : b; }
LF_FN lf_i32 lf_min_i32(lf_i32 a, lf_i32 b) { return a < b ? a : b; }

// ---------------------------------------------------------------- rng (rust/rng.rs)

#define LF_PHILOX_M0 0xD2511F53u
#define LF_PHILOX_M1 0xCD9E8D57u
#define LF_PHILOX_W0 0x9E3779B9u
#define LF_PHILOX_W1 0xBB67AE85u

struct lf_u32x4 {
    lf_u32 v[4];
};

/// The Random123 Philox4x32 block function with 10 rounds (cuRAND's curand_Philox4x32_10).
LF_FN lf_u32x4 lf_philox4x32_10(lf_u32x4 c, lf_u32 k0, lf_u32 k1) {
    for (int r = 0; r < 10; ++r) {
        if (r > 0) {
            k0 += LF_PHILOX_W0;
            k1 += LF_PHILOX_W1;
        }
        lf_u64 p0 = (lf_u64)LF_PHILOX_M0 * c.v[0];
        lf_u64 p1 = (lf_u64)LF_PHILOX_M1 * c.v[2];
        lf_u32x4 n;
        n.v[0] = (lf_u32)(p1 >> 32) ^ c.v[1] ^ k0;
        n.v[1] = (lf_u32)p1;
        n.v[2] = (lf_u32)(p0 >> 32) ^ c.v[3] ^ k1;
        n.v[3] = (lf_u32)p0;
        c = n;
    }
    return c;
}

/// Word `index & 3` of philox([index >> 2, index >> 34, stream, stream >> 32],
/// [seed, seed >> 32]) — `rng::random_u32`.
LF_FN lf_u32 lf_random_u32(lf_u64 seed, lf_u64 stream, lf_u64 index) {
    lf_u32x4 c;
    c.v[0] = (lf_u32)(index >> 2);
    c.v[1] = (lf_u32)(index >> 34);
    c.v[2] = (lf_u32)stream;
    c.v[3] = (lf_u32)(stream >> 32);
    lf_u32x4 w = lf_philox4x32_10(c, (lf_u32)seed, (lf_u32)(seed >> 32));
    return w.v[index & 3];
}

// ---------------------------------------------------------------- format (rust/format.rs)

#define LF_NAN_IEEE 0
#define LF_NAN_MAX 1
#define LF_NAN_NEGZERO 2
#define LF_NAN_NONE 3

// Flag bits of a packed format + options word (built by lowfp.cuda and the host driver):
#define LF_F_SIGNED 1u
#define LF_F_INF 2u
#define LF_F_SUBNORMALS 4u
#define LF_F_NAN_SHIFT 3  // two bits: LF_NAN_*
#define LF_F_SATURATE 32u
#define LF_F_NAN_TO_ZERO 64u
#define LF_F_CLAMP_NEGATIVE 128u

// Rounding modes (rust/exmy.rs const codes).
#define LF_NEAREST 0
#define LF_NEAREST_AWAY 1
#define LF_TOWARD_ZERO 2
#define LF_UP 3
#define LF_DOWN 4
#define LF_STOCHASTIC 5
#define LF_TO_ODD 6
// Stochastic with 16-bit words (rng::Resolution::Bits16): the element code of LF_STOCHASTIC,
// the words of lf_random_word.
#define LF_STOCHASTIC16 7

/// Whether `mode` draws random words.
LF_FN bool lf_is_stochastic(int mode) { return mode == LF_STOCHASTIC || mode == LF_STOCHASTIC16; }

/// The random word of element `index` under stochastic mode `mode` (`rng::fill_words`):
/// LF_STOCHASTIC16 takes the low (even index) or high half h of word index >> 1 as
/// h << 16 | 0xFFFF; any other mode the 32-bit word.
LF_FN lf_u32 lf_random_word(int mode, lf_u64 seed, lf_u64 stream, lf_u64 index) {
    if (mode != LF_STOCHASTIC16) return lf_random_u32(seed, stream, index);
    lf_u32 w = lf_random_u32(seed, stream, index >> 1);
    return (index & 1) ? (w | 0xFFFFu) : ((w << 16) | 0xFFFFu);
}

// Bad-element flags of one encode (rust/exmy.rs BAD_NAN, BAD_NEG).
#define LF_BAD_NAN 1u
#define LF_BAD_NEG 2u

/// A format with everything the per-element encoder and decoder need (`exmy::Encoder`).
struct lf_enc {
    lf_u32 exp_bits, man, bits, mag_bits;
    lf_i32 bias, emin, emax;
    bool is_signed, inf, subnormals, negzero, saturate, nan_to_zero, clamp_negative;
    lf_i32 nan_kind;
    lf_u32 max_code, sign_mask, overflow_code, inf_code;
    lf_u64 hidden;
};

LF_FN lf_enc lf_make_enc(lf_u32 exp_bits, lf_u32 man_bits, lf_i32 bias, lf_u32 flags) {
    lf_enc f;
    f.exp_bits = exp_bits;
    f.man = man_bits;
    f.bias = bias;
    f.is_signed = (flags & LF_F_SIGNED) != 0;
    f.inf = (flags & LF_F_INF) != 0;
    f.subnormals = (flags & LF_F_SUBNORMALS) != 0;
    f.nan_kind = (lf_i32)((flags >> LF_F_NAN_SHIFT) & 3u);
    f.saturate = (flags & LF_F_SATURATE) != 0;
    f.nan_to_zero = (flags & LF_F_NAN_TO_ZERO) != 0;
    f.clamp_negative = (flags & LF_F_CLAMP_NEGATIVE) != 0;
    f.negzero = f.nan_kind == LF_NAN_NEGZERO;
    f.mag_bits = exp_bits + man_bits;
    f.bits = (f.is_signed ? 1u : 0u) + f.mag_bits;
    f.sign_mask = f.is_signed ? (1u << (f.bits - 1)) : 0u;
    lf_u32 all = (lf_u32)((1ull << f.mag_bits) - 1);
    // `Format::inf_code_mag`: the all-ones exponent with a zero mantissa (IEEE), else the
    // magnitude code right below the NaN (P3109 style: ±inf at S 11…1 11…1 with the NaN at
    // 1 00…0 00…0, or at S 11…1 11…0 with the NaN at S 11…1 11…1).
    switch (f.nan_kind) {
        case LF_NAN_NEGZERO: f.inf_code = all; break;
        case LF_NAN_MAX: f.inf_code = all - 1; break;
        default: f.inf_code = ((1u << exp_bits) - 1) << man_bits; break;
    }
    // `Format::max_code_mag`: the largest finite magnitude code.
    if (f.inf && f.nan_kind != LF_NAN_IEEE) {
        f.max_code = f.inf_code - 1;  // P3109 style: inf right below the NaN
    } else {
        switch (f.nan_kind) {
            case LF_NAN_IEEE: f.max_code = all - (1u << man_bits); break;
            case LF_NAN_MAX: f.max_code = all - 1; break;
            default: f.max_code = all; break;
        }
    }
    f.emin = f.subnormals ? 1 - bias : -bias;
    lf_i32 field = (lf_i32)(f.max_code >> man_bits);
    f.emax = (f.subnormals && field == 0) ? f.emin - 1 : field - bias;
    bool has_nan = f.nan_kind != LF_NAN_NONE;
    if (f.saturate) f.overflow_code = f.max_code;
    else if (f.inf) f.overflow_code = f.inf_code;
    else if (has_nan) f.overflow_code = 0xFFFFFFFFu;  // marker: NaN with sign
    else f.overflow_code = f.max_code;
    f.hidden = f.subnormals ? 0ull : (1ull << man_bits);
    return f;
}

/// Canonical NaN code for a sign (`Format::nan_code`).
LF_FN lf_u32 lf_nan_code(const lf_enc& f, bool neg) {
    lf_u32 s = neg ? f.sign_mask : 0u;
    switch (f.nan_kind) {
        case LF_NAN_IEEE: return s | f.inf_code | (1u << (f.man - 1));
        case LF_NAN_MAX: return s | (lf_u32)((1ull << f.mag_bits) - 1);
        case LF_NAN_NEGZERO: return f.sign_mask;
        default: return 0u;
    }
}

/// Whether `code` is a NaN code (`Format::is_nan_code`).
LF_FN bool lf_is_nan_code(const lf_enc& f, lf_u32 code) {
    lf_u32 mag = code & (lf_u32)((1ull << f.mag_bits) - 1);
    switch (f.nan_kind) {
        case LF_NAN_IEEE: return mag > f.inf_code;
        case LF_NAN_MAX: return mag == (lf_u32)((1ull << f.mag_bits) - 1);
        case LF_NAN_NEGZERO: return code == f.sign_mask;
        default: return false;
    }
}

/// Whether the codes are the leading bits of float32 patterns (bfloat16, e8m23, …).
LF_FN bool lf_is_f32_prefix(const lf_enc& f) {
    return f.exp_bits == 8 && f.bias == 127 && f.is_signed && f.nan_kind == LF_NAN_IEEE &&
           f.subnormals;
}

/// float32 bits of `sig · 2^k`, which the caller knows to be exact in float32 (sig < 2^24).
LF_FN lf_u32 lf_f32_exact(lf_u32 sig, lf_i32 k) {
    if (sig == 0) return 0u;
    lf_i32 msb = 63 - lf_clz64((lf_u64)sig);
    lf_i32 e = msb + k;
    if (e >= -126) {
        lf_u32 m = (sig << (23 - msb)) & 0x7FFFFFu;
        return ((lf_u32)(e + 127) << 23) | m;
    }
    lf_i32 s = k + 149;  // value = bits · 2^-149
    return s >= 0 ? (sig << s) : (sig >> (-s));
}

/// float32 bits of the value of `code` (codes ≥ 2^bits are masked, as in `decode_f64`).
/// NaN codes give the quiet NaN 0x7FC00000 with the code's sign (what `decode_f64(c) as f32`
/// gives) unless `payload` and the format is a float32 prefix, whose codes are shifted in
/// whole (`exmy::decode`'s bfloat16-like path).
LF_FN lf_u32 lf_decode_f32_bits(const lf_enc& f, lf_u32 code, bool payload) {
    code &= (lf_u32)((1ull << f.bits) - 1);
    if (payload && lf_is_f32_prefix(f)) return code << (23 - f.man);
    bool neg = f.is_signed && (code & f.sign_mask) != 0;
    lf_u32 sign = neg ? 0x80000000u : 0u;
    if (lf_is_nan_code(f, code)) return sign | 0x7FC00000u;
    lf_u32 mag = code & (lf_u32)((1ull << f.mag_bits) - 1);
    if (f.inf && mag == f.inf_code) return sign | 0x7F800000u;
    lf_i32 field = (lf_i32)(mag >> f.man);
    lf_u32 man = mag & ((1u << f.man) - 1);
    if (field == 0 && f.subnormals) return sign | lf_f32_exact(man, f.emin - (lf_i32)f.man);
    return sign | lf_f32_exact((1u << f.man) | man, field - f.bias - (lf_i32)f.man);
}

// ---------------------------------------------------------------- input decomposition

/// |x| = sig · 2^lsb, 2^e ≤ |x| < 2^(e+1) (zero: sig = 0, e = −4096); `special` marks inf and
/// NaN (then sig holds the mantissa field: 0 for inf).
struct lf_parts {
    bool neg, special;
    lf_i32 e;
    lf_u64 sig;
    lf_i32 lsb;
};

LF_FN lf_parts lf_parts_ieee(bool neg, lf_u32 ef, lf_u64 mf, lf_u32 eb, lf_u32 mb) {
    lf_u32 emax_field = (1u << eb) - 1;
    lf_i32 bias = (lf_i32)(emax_field >> 1);
    lf_parts p;
    p.neg = neg;
    p.special = ef == emax_field;
    bool normal = ef != 0;
    p.sig = p.special ? mf : (mf | ((lf_u64)(normal ? 1 : 0) << mb));
    p.lsb = (lf_i32)(ef > 1 ? ef : 1) - bias - (lf_i32)mb;
    p.e = p.sig == 0 ? -4096 : (63 - lf_clz64(p.sig)) + p.lsb;
    return p;
}

LF_FN lf_parts lf_parts_f32(lf_u32 b) {
    return lf_parts_ieee((b >> 31) != 0, (b >> 23) & 0xFFu, (lf_u64)(b & 0x7FFFFFu), 8, 23);
}
LF_FN lf_parts lf_parts_f64(lf_u64 b) {
    return lf_parts_ieee((b >> 63) != 0, (lf_u32)((b >> 52) & 0x7FFu), b & ((1ull << 52) - 1),
                         11, 52);
}
LF_FN lf_parts lf_parts_f16(lf_u16 h) {
    lf_u32 b = h;
    return lf_parts_ieee((b >> 15) != 0, (b >> 10) & 0x1Fu, (lf_u64)(b & 0x3FFu), 5, 10);
}
LF_FN lf_parts lf_parts_bf16(lf_u16 h) { return lf_parts_f32((lf_u32)h << 16); }

// ---------------------------------------------------------------- the encoder (rust/exmy.rs)

/// Attach the sign to a magnitude code.
LF_FN lf_u32 lf_signed_code(const lf_enc& f, bool neg, lf_u32 mag) {
    return (neg && !(f.negzero && mag == 0)) ? (mag | f.sign_mask) : mag;
}

/// The code of an overflowing value, by rounding direction and policy.
LF_FN lf_u32 lf_overflow(const lf_enc& f, bool neg, int mode) {
    bool shrinks = mode == LF_TOWARD_ZERO || mode == LF_TO_ODD || (mode == LF_UP && neg) ||
                   (mode == LF_DOWN && !neg);
    if (shrinks) return lf_signed_code(f, neg, f.max_code);
    if (f.overflow_code == 0xFFFFFFFFu) return lf_nan_code(f, neg);
    return lf_signed_code(f, neg, f.overflow_code);
}

/// Magnitude code of m · 2^(ee − M); `*ovf` set when it overflows.
LF_FN lf_u32 lf_assemble(const lf_enc& f, lf_i32 e, lf_i32 ee, lf_u64 m, bool* ovf) {
    lf_u64 base = (lf_u64)(ee - f.emin) << f.man;
    lf_u64 code = base + m - f.hidden;
    *ovf = (e > f.emax) || (code > (lf_u64)f.max_code);
    return (lf_u32)code;
}

/// Round a finite magnitude (`round_mag`): ulp 2^q, q = max(e, emin) − M; keep
/// sig >> (q − lsb) and decide from the discarded bits:
///   sig:   1 m m m | r r r r r r      kept = 1mmm, rem = rrrrrr, half = 100000
template <int MODE>
LF_FN lf_u32 lf_round_mag(const lf_enc& f, const lf_parts& p, lf_u32 r, bool* ovf) {
    if (p.e < f.emin && !f.subnormals) {
        *ovf = false;
        return 0u;  // below the smallest value of a zero-less format
    }
    lf_i32 ee = lf_max_i32(p.e, f.emin);
    lf_i32 q = ee - (lf_i32)f.man;
    lf_i32 d = q - p.lsb;
    if (d <= 0) return lf_assemble(f, p.e, ee, p.sig << lf_min_i32(-d, 63), ovf);
    lf_u32 shift = (lf_u32)d;
    lf_u32 sh = shift < 63 ? shift : 63;
    lf_u64 kept = p.sig >> sh;
    lf_u64 rem = p.sig & ((1ull << sh) - 1);
    lf_u64 half = (1ull << sh) >> 1;
    bool inexact = rem != 0;
    bool up;
    if (MODE == LF_NEAREST) up = (rem > half) || (rem == half && (kept & 1) && inexact);
    else if (MODE == LF_NEAREST_AWAY) up = rem >= half && inexact;
    else if (MODE == LF_TOWARD_ZERO) up = false;
    else if (MODE == LF_UP) up = !p.neg && inexact;
    else if (MODE == LF_DOWN) up = p.neg && inexact;
    else if (MODE == LF_TO_ODD) up = !(kept & 1) && inexact;  // kept = 1mmm: its last bit
    else {
        // stochastic: up iff r < floor(rem · 2^32 / 2^shift)
        lf_u64 frac;
        if (shift <= 32) frac = rem << (32 - shift);
        else if (shift - 32 < 64) frac = rem >> (shift - 32);
        else frac = 0;
        up = (lf_u64)r < frac;
    }
    return lf_assemble(f, p.e, ee, kept + (up ? 1u : 0u), ovf);
}

/// inf and NaN inputs (`encode_special`).
LF_FN lf_u32 lf_encode_special(const lf_enc& f, const lf_parts& p, lf_u32* bad) {
    if (p.sig == 0) {
        if (p.neg && f.sign_mask == 0) {
            *bad = f.clamp_negative ? 0u : LF_BAD_NEG;
            return 0u;
        }
        if (f.inf && !f.saturate) return lf_signed_code(f, p.neg, f.inf_code);
        return lf_overflow(f, p.neg, LF_NEAREST);
    }
    if (f.nan_kind != LF_NAN_NONE) return lf_nan_code(f, p.neg);
    *bad = f.nan_to_zero ? 0u : LF_BAD_NAN;
    return 0u;
}

/// Encode one element (`Encoder::encode_one`): returns the code; ORs LF_BAD_* into `*bad`.
/// `r` is used only by stochastic rounding.
template <int MODE>
LF_FN lf_u32 lf_encode_parts(const lf_enc& f, const lf_parts& p, lf_u32 r, lf_u32* bad) {
    if (p.special) {
        lf_u32 b = 0;
        lf_u32 c = lf_encode_special(f, p, &b);
        *bad |= b;
        return c;
    }
    bool ovf;
    lf_u32 mag = lf_round_mag<MODE>(f, p, r, &ovf);
    lf_u32 code = ovf ? lf_overflow(f, p.neg, MODE) : lf_signed_code(f, p.neg, mag);
    // a negative non-zero value into an unsigned format
    if (p.neg && f.sign_mask == 0 && p.sig != 0) {
        if (!f.clamp_negative) *bad |= LF_BAD_NEG;
        return 0u;
    }
    return code;
}

/// Run-time mode dispatch (host code and tests; kernels instantiate the template).
LF_FN lf_u32 lf_encode_parts_dyn(const lf_enc& f, const lf_parts& p, int mode, lf_u32 r,
                                 lf_u32* bad) {
    switch (mode) {
        case LF_NEAREST: return lf_encode_parts<LF_NEAREST>(f, p, r, bad);
        case LF_NEAREST_AWAY: return lf_encode_parts<LF_NEAREST_AWAY>(f, p, r, bad);
        case LF_TOWARD_ZERO: return lf_encode_parts<LF_TOWARD_ZERO>(f, p, r, bad);
        case LF_UP: return lf_encode_parts<LF_UP>(f, p, r, bad);
        case LF_DOWN: return lf_encode_parts<LF_DOWN>(f, p, r, bad);
        case LF_TO_ODD: return lf_encode_parts<LF_TO_ODD>(f, p, r, bad);
        default: return lf_encode_parts<LF_STOCHASTIC>(f, p, r, bad);  // both stochastic modes
    }
}

// Input kinds of the kernels and the host driver.
#define LF_IN_F32 0
#define LF_IN_F64 1
#define LF_IN_F16 2
#define LF_IN_BF16 3

/// Decompose element i of an input array of kind `kind`.
LF_FN lf_parts lf_load_parts(const void* x, lf_u64 i, int kind) {
    switch (kind) {
        case LF_IN_F64: return lf_parts_f64(((const lf_u64*)x)[i]);
        case LF_IN_F16: return lf_parts_f16(((const lf_u16*)x)[i]);
        case LF_IN_BF16: return lf_parts_bf16(((const lf_u16*)x)[i]);
        default: return lf_parts_f32(((const lf_u32*)x)[i]);
    }
}

/// The codes of float16 and bfloat16 (targets of `quantize` for 16-bit inputs), nearest, with
/// inf: the encoder of `py.rs::lut_bits`.
LF_FN lf_enc lf_enc_f16() {
    return lf_make_enc(5, 10, 15, LF_F_SIGNED | LF_F_INF | LF_F_SUBNORMALS);
}
LF_FN lf_enc lf_enc_bf16() {
    return lf_make_enc(8, 7, 127, LF_F_SIGNED | LF_F_INF | LF_F_SUBNORMALS);
}

/// The value of `code` in the output kind of `quantize` (raw bits: f32 → u32, f64 → u64,
/// f16/bf16 → u16). NaN codes give the canonical quiet NaN with the code's sign.
LF_FN lf_u64 lf_quantize_out_bits(const lf_enc& f, lf_u32 code, int kind) {
    lf_u32 v = lf_decode_f32_bits(f, code, false);
    if (kind == LF_IN_F32) return v;
    if (kind == LF_IN_F64) {
        // exact widening of float32 bits (NaN → the canonical f64 NaN with its sign)
        lf_parts p = lf_parts_f32(v);
        lf_u64 sign = (lf_u64)(v >> 31) << 63;
        if (p.special) return sign | (p.sig ? 0x7FF8000000000000ull : 0x7FF0000000000000ull);
        if (p.sig == 0) return sign;
        lf_i32 msb = 63 - lf_clz64(p.sig);
        lf_u64 m = (p.sig << (52 - msb)) & ((1ull << 52) - 1);
        return sign | ((lf_u64)(p.e + 1023) << 52) | m;
    }
    lf_enc t = kind == LF_IN_F16 ? lf_enc_f16() : lf_enc_bf16();
    lf_u32 bad = 0;
    return lf_encode_parts<LF_NEAREST>(t, lf_parts_f32(v), 0u, &bad);
}

// ---------------------------------------------------------------- table codecs (rust/table.rs)
//
// Levels are strictly ascending finite float32 values (2..=256), computed by the Rust core
// (linear_levels, dynamic_levels, log_levels) and passed in. The definitions:
// - nearest(x): c = #{k : m_k < x} with m_k = (l[k] + l[k+1]) / 2 in f64; an exact tie
//   x == m_c goes to the even index of c, c+1; NaN → 0 (callers reject NaN first).
// - stochastic(x, r): clamp outside; an exact level keeps its index; else lo < x < hi and up
//   iff r < trunc((x − lo) / (hi − lo) · 2^32) in f64.

LF_FN double lf_midpoint(const float* l, lf_i32 k) {
    return ((double)l[k] + (double)l[k + 1]) / 2.0;
}

LF_FN lf_u8 lf_table_nearest(const float* l, lf_i32 n, float x) {
    if (x != x) return 0;
    double xd = (double)x;
    // c = #{k in 0..n-1 : m_k < x}: the predicate is monotone in k (midpoints ascend).
    lf_i32 lo = 0, hi = n - 1;
    while (lo < hi) {
        lf_i32 mid = (lo + hi) >> 1;
        if (lf_midpoint(l, mid) < xd) lo = mid + 1;
        else hi = mid;
    }
    lf_i32 c = lo;
    if (c < n - 1 && xd == lf_midpoint(l, c)) c += c & 1;
    return (lf_u8)c;
}

LF_FN lf_u8 lf_table_stochastic(const float* l, lf_i32 n, float x, lf_u32 r) {
    if (x != x || x <= l[0]) return 0;
    if (x >= l[n - 1]) return (lf_u8)(n - 1);
    // lo = the largest index with l[lo] < x (exists: l[0] < x)
    lf_i32 a = 0, b = n - 1;  // l[a] < x <= ... ; find the last l < x
    while (b - a > 1) {
        lf_i32 mid = (a + b) >> 1;
        if (l[mid] < x) a = mid;
        else b = mid;
    }
    if (l[a + 1] == x) return (lf_u8)(a + 1);
    double lo = (double)l[a], hi = (double)l[a + 1];
    double t = ((double)x - lo) / (hi - lo) * 4294967296.0;
    lf_u64 ti = (lf_u64)t;
    return (lf_u8)(a + (((lf_u64)r < ti) ? 1 : 0));
}

// ---------------------------------------------------------------- packing (rust/pack.rs)
//
// Element i occupies stream bits [k·i, k·i + k); stream bit b is bit b % 8 of byte b / 8.
//   k = 4: byte 0 = e1 e1 e1 e1 e0 e0 e0 e0   (element 0 in the low nibble)
// Padding bits after the last element are zero.

/// Byte j of the packed stream of `n` k-bit codes (codes assumed < 2^k).
LF_FN lf_u8 lf_pack_byte(const lf_u8* codes, lf_u64 n, lf_u32 k, lf_u64 j) {
    lf_u64 b0 = 8 * j;
    lf_u64 i = b0 / k;
    lf_u32 acc = 0;
    for (; i < n && i * k < b0 + 8; ++i) {
        lf_i64 shift = (lf_i64)(i * k) - (lf_i64)b0;  // may be negative for the first element
        lf_u32 c = codes[i];
        acc |= shift >= 0 ? (c << shift) : (c >> (-shift));
    }
    return (lf_u8)acc;
}

/// Code i of a packed stream of k-bit codes.
LF_FN lf_u8 lf_unpack_code(const lf_u8* packed, lf_u64 packed_len, lf_u32 k, lf_u64 i) {
    lf_u64 b = (lf_u64)k * i;
    lf_u64 byte = b >> 3;
    lf_u32 w = packed[byte];
    if (byte + 1 < packed_len) w |= (lf_u32)packed[byte + 1] << 8;
    return (lf_u8)((w >> (b & 7)) & ((1u << k) - 1));
}

/// ceil(n · k / 8).
LF_FN lf_u64 lf_packed_len(lf_u64 n, lf_u32 k) { return (n / 8) * k + ((n % 8) * k + 7) / 8; }

// ---------------------------------------------------------------- blockwise (rust/block.rs)
//
//   absmax  s = amax / M                      (fp32; M = the element codec's max, 1 for tables)
//   e8m0    s = 2^(floor(log2 amax) − floor(log2 M))  (OCP MX floor rule, ExMy elements)
//           s = 2^ceil(log2 amax)             (table codecs, so |x/s| ≤ 1)
//   e8m0_ceil, e8m0_even, e8m0_rceil: torchao's CEIL, EVEN, RCEIL (ExMy elements; on the
//           float32 bits of amax, `e8m0_exponent` in rust/block.rs)
//   e4m3    s = e4m3(amax / M / g)            (NVFP4; applied as s · g)
// Elements are encoded from x / (s · g) (IEEE division) and decoded as value · (s · g).

#define LF_SCALE_ABSMAX 0
#define LF_SCALE_E8M0 1
#define LF_SCALE_E4M3 2
#define LF_SCALE_E8M0_CEIL 3
#define LF_SCALE_E8M0_EVEN 4
#define LF_SCALE_E8M0_RCEIL 5

/// floor(log2 a) of non-zero float32 magnitude bits `a` (exponent field 255 reads as 128).
LF_FN lf_i32 lf_floor_log2_bits(lf_u32 b) {
    lf_i32 ef = (lf_i32)(b >> 23);
    if (ef == 0) return (63 - lf_clz64((lf_u64)b)) - 149;
    return ef - 127;
}

/// floor(log2 |x|) of a finite non-zero f32, from its bits.
LF_FN lf_i32 lf_floor_log2(float x) { return lf_floor_log2_bits(lf_f32_bits(x) & 0x7FFFFFFFu); }

/// 2^k as f32 for -149 ≤ k ≤ 127.
LF_FN float lf_pow2f(lf_i32 k) {
    if (k >= -126) return lf_f32_from_bits((lf_u32)(k + 127) << 23);
    return lf_f32_from_bits(1u << (k + 149));
}

/// Whether the non-zero float32 magnitude bits `a` are a power of two.
LF_FN bool lf_is_pow2_bits(lf_u32 a) {
    if ((a >> 23) == 0) return (a & (a - 1)) == 0;
    return (a & 0x7FFFFFu) == 0;
}

/// Unbiased E8M0 exponent (−127..=127) of an ExMy block's scale under the power-of-two rules
/// (`e8m0_exponent` in rust/block.rs): amax bits `amax`, emax = floor(log2 M), `man_bits`.
///   floor  floor(log2 amax) − emax
///   ceil   floor + 1 unless amax is a power of two
///   even   r = (amax + 2^(22−man_bits)) & 0xFF800000, then floor of r (r = 0: −127)
///   rceil  d = amax / M (IEEE division), ceil(log2 d) from d's bits (subnormal d: up iff
///          F_d > 2^22)
LF_FN lf_i32 lf_e8m0_exponent(int rule, lf_u32 amax, lf_i32 emax, lf_u32 man_bits, float max) {
    lf_u32 a = amax & 0x7FFFFFFFu;
    if (a == 0) return -127;
    lf_i32 k;
    if (rule == LF_SCALE_E8M0_CEIL) {
        k = lf_floor_log2_bits(a) + (lf_is_pow2_bits(a) ? 0 : 1) - emax;
    } else if (rule == LF_SCALE_E8M0_EVEN) {
        lf_u32 r = (a + (1u << (22 - man_bits))) & 0xFF800000u;
        if (r == 0) return -127;
        k = lf_floor_log2_bits(r) - emax;
    } else if (rule == LF_SCALE_E8M0_RCEIL) {
        lf_u32 d = lf_f32_bits(lf_f32_from_bits(a) / max);
        lf_i32 e = (lf_i32)(d >> 23);
        lf_u32 f = d & 0x7FFFFFu;
        bool up = e == 0 ? f > 0x400000u : f != 0;
        k = e + (up ? 1 : 0) - 127;
    } else {
        k = lf_floor_log2_bits(a) - emax;  // LF_SCALE_E8M0: the OCP floor rule
    }
    return lf_max_i32(-127, lf_min_i32(127, k));
}

/// The OCP E4M3 ("fn") encoder with saturation, nearest: the NVFP4 block scale format.
LF_FN lf_enc lf_enc_e4m3_sat() {
    return lf_make_enc(4, 3, 7,
                       LF_F_SIGNED | LF_F_SUBNORMALS | (LF_NAN_MAX << LF_F_NAN_SHIFT) |
                           LF_F_SATURATE);
}

/// The block scale (`Spec::block_scale`) from the block's amax (max of |x|, finite) and the
/// tensor scale `global`; `elem_max` is M; `exmy` whether the elements are a float format,
/// `man_bits` its mantissa bits.
LF_FN float lf_block_scale(int rule, float amax, float elem_max, bool exmy, lf_u32 man_bits,
                           float global) {
    if (rule == LF_SCALE_ABSMAX) return amax / elem_max;
    if (exmy && rule != LF_SCALE_E4M3) {
        lf_i32 emax = lf_floor_log2(elem_max);
        return lf_pow2f(lf_e8m0_exponent(rule, lf_f32_bits(amax), emax, man_bits, elem_max));
    }
    if (rule == LF_SCALE_E8M0) {
        if (amax == 0.0f) return lf_f32_from_bits(1u << 22);  // 2^-127
        lf_i32 e = lf_floor_log2(amax);
        lf_i32 k;
        if (exmy) k = e - lf_floor_log2(elem_max);
        else if (amax == lf_pow2f(e)) k = e;
        else k = e + 1;
        return lf_pow2f(lf_max_i32(-127, lf_min_i32(127, k)));
    }
    lf_enc t = lf_enc_e4m3_sat();
    lf_u32 bad = 0;
    float v = amax / elem_max / global;
    lf_u32 c = lf_encode_parts<LF_NEAREST>(t, lf_parts_f32(lf_f32_bits(v)), 0u, &bad);
    return lf_f32_from_bits(lf_decode_f32_bits(t, c, false));
}

/// The normalized element x / sd of a block with applied scale sd = s · g (0 when sd is 0).
LF_FN float lf_block_normalize(float x, float sd) { return sd > 0.0f ? x / sd : 0.0f; }

// ---------------------------------------------------------------- per-block log bases (rust/logfmt.rs)
//
// Log(quantile=q) picks each block's base from the block itself:
//   k = min(floor(q · (len − 1)), len − 1)   (q as f64; nearest rank)
//   v = kth_smallest(|x|) / amax             (f32 division; 1 when amax = 0)
//   alpha = the largest f32 in [2^-10, 1 − 2^-10] with pow_f64(alpha, n_nonzero − 1) ≤ v
// where pow_f64 is repeated f64 multiplication from 1.0. `fits` is monotone in alpha, so
// bisection over the f32 bit patterns gives Rust's answer (Rust starts from a libm guess; the
// largest fitting alpha does not depend on the start).

#define LF_ALPHA_MIN_BITS 0x3A800000u  // 2^-10
#define LF_ALPHA_MAX_BITS 0x3F7FC000u  // 1 - 2^-10

/// Rank of the quantile q in a block of `len` elements (`quantile_abs`'s k).
LF_FN lf_u32 lf_quantile_rank(float q, lf_u32 len) {
    if (len == 0) return 0;
    double qd = q != q ? 0.0 : (q < 0.0f ? 0.0 : (q > 1.0f ? 1.0 : (double)q));
    lf_u32 last = len - 1;
    double t = qd * (double)last;
    lf_u32 k = (lf_u32)t;  // t >= 0: truncation is floor
    return k < last ? k : last;
}

/// The k-th smallest |x| (0-based) of x[0..len) as bits with the sign cleared: the smallest
/// t with #{|x_i| ≤ t} > k, by bisection over the 31-bit keys (|x| orders like its bits).
/// Order-independent, no scratch memory; 31 passes over the block.
LF_FN lf_u32 lf_kth_smallest_abs_bits(const float* x, lf_u32 len, lf_u32 k) {
    lf_u32 lo = 0, hi = 0x7FFFFFFFu;  // answer in [lo, hi]
    while (lo < hi) {
        lf_u32 mid = lo + ((hi - lo) >> 1);
        lf_u32 c = 0;
        for (lf_u32 i = 0; i < len; ++i) c += (lf_f32_bits(x[i]) & 0x7FFFFFFFu) <= mid ? 1u : 0u;
        if (c > k) hi = mid;
        else lo = mid + 1;
    }
    return lo;
}

/// alpha^k by k repeated f64 multiplications from 1.0 (`pow_f64`).
LF_FN double lf_pow_f64(double a, lf_u32 k) {
    double p = 1.0;
    for (lf_u32 i = 0; i < k; ++i) p *= a;
    return p;
}

/// `alpha_from_quantile(v, n_nonzero)` (float32 bits of the base).
LF_FN lf_u32 lf_alpha_from_quantile_bits(float v, lf_u32 n_nonzero) {
    if (n_nonzero <= 1 || v != v || v >= 1.0f) return LF_ALPHA_MAX_BITS;
    lf_u32 k = n_nonzero - 1;
    double vd = (double)v;
    lf_u32 lo = LF_ALPHA_MIN_BITS, hi = LF_ALPHA_MAX_BITS;
    if (!(lf_pow_f64((double)lf_f32_from_bits(lo), k) <= vd)) return LF_ALPHA_MIN_BITS;
    if (lf_pow_f64((double)lf_f32_from_bits(hi), k) <= vd) return LF_ALPHA_MAX_BITS;
    while (hi - lo > 1) {  // fits(lo), !fits(hi)
        lf_u32 mid = lo + (hi - lo) / 2;
        if (lf_pow_f64((double)lf_f32_from_bits(mid), k) <= vd) lo = mid;
        else hi = mid;
    }
    return lo;
}

/// Non-zero magnitudes of a log code (`n_nonzero` of `log_table`).
LF_FN lf_u32 lf_log_nonzero(lf_u32 bits, bool is_signed, bool zero) {
    return is_signed ? (1u << (bits - 1)) - 1 : (1u << bits) - (zero ? 1u : 0u);
}

/// Number of levels of a log code (`log_levels`).
LF_FN lf_u32 lf_log_nlev(lf_u32 bits, bool is_signed, bool zero) {
    return is_signed ? 2 * ((1u << (bits - 1)) - 1) + 1 : (1u << bits);
}

/// The ascending levels of `log_levels(bits, signed, alpha, zero)` into `out` (nlev values):
/// magnitudes [alpha^(n−1), …, alpha, 1], powers by repeated f64 multiplication, each rounded.
/// Returns false when adjacent levels collide (Rust's "alpha" error: they underflow).
LF_FN bool lf_log_levels(lf_u32 bits, bool is_signed, bool zero, float alpha, float* out) {
    double a = (double)alpha;
    lf_u32 n, off;
    if (is_signed) {
        n = (1u << (bits - 1)) - 1;
        off = n + 1;
        out[n] = 0.0f;
    } else if (zero) {
        n = (1u << bits) - 1;
        off = 1;
        out[0] = 0.0f;
    } else {
        n = 1u << bits;
        off = 0;
    }
    double p = 1.0;
    for (lf_u32 j = 0; j < n; ++j) {  // p = alpha^j is magnitude n-1-j
        float v = (float)p;
        out[off + n - 1 - j] = v;
        if (is_signed) out[n - 1 - (n - 1 - j)] = -v;
        p *= a;
    }
    lf_u32 nlev = lf_log_nlev(bits, is_signed, zero);
    for (lf_u32 i = 0; i + 1 < nlev; ++i)
        if (!(out[i] < out[i + 1])) return false;
    return true;
}

// ---------------------------------------------------------------- non-finite blocks (rust/block.rs)
//
// A block's amax travels as a key: bits 0..30 the max |x| bit pattern of its finite elements,
// bit 31 set when it holds a NaN or ±inf. Keys combine with lf_amax_combine (associative and
// commutative, so any reduction order gives the same key). Under nonfinite="ocp" a marked
// block is quantized as a block of zeros and its scale becomes the float32 NaN 0x7FC00000
// (E8M0 0xFF, E4M3 0x7F once stored); the e4m3 tensor scale comes from the finite elements
// of every block (`global_scale` in Rust), i.e. the keys with bit 31 cleared.

#define LF_AMAX_NONFINITE 0x80000000u
#define LF_F32_NAN_BITS 0x7FC00000u

/// The amax key of one element from its float32 bits.
LF_FN lf_u32 lf_amax_key(lf_u32 bits) {
    lf_u32 v = bits & 0x7FFFFFFFu;
    return v >= 0x7F800000u ? LF_AMAX_NONFINITE : v;
}

/// Two amax keys as one: the larger finite max, the OR of the non-finite marks.
LF_FN lf_u32 lf_amax_combine(lf_u32 a, lf_u32 b) {
    lf_u32 fa = a & 0x7FFFFFFFu, fb = b & 0x7FFFFFFFu;
    return ((a | b) & LF_AMAX_NONFINITE) | (fa > fb ? fa : fb);
}

/// The amax key of xs[0..len).
LF_FN lf_u32 lf_amax_key_of(const float* xs, lf_u64 len) {
    lf_u32 k = 0;
    for (lf_u64 i = 0; i < len; ++i) k = lf_amax_combine(k, lf_amax_key(lf_f32_bits(xs[i])));
    return k;
}

/// The tensor scale g of the e4m3 rule from the largest finite |x| (bits), else 1.
LF_FN float lf_global_scale_of(int rule, lf_u32 finite_amax_bits, float elem_max) {
    if (rule != LF_SCALE_E4M3) return 1.0f;
    float t = lf_f32_from_bits(finite_amax_bits) / (elem_max * 448.0f);
    return (t > 0.0f && t <= 3.4028234663852886e38f) ? t : 1.0f;
}

/// The scale of a block from its amax key: NaN for a marked block (the caller rejects such
/// blocks under nonfinite="error" before the scale is used), else lf_block_scale.
LF_FN float lf_block_scale_key(int rule, lf_u32 key, float elem_max, bool exmy, lf_u32 man_bits,
                               float global) {
    if (key & LF_AMAX_NONFINITE) return lf_f32_from_bits(LF_F32_NAN_BITS);
    return lf_block_scale(rule, lf_f32_from_bits(key), elem_max, exmy, man_bits, global);
}

// ---------------------------------------------------------------- a log-quantile block (rust/block.rs)
//
// One block of a Log(quantile=q) codec, as quantize_group_in does it: the scale from the
// block's amax (the scale rule, elem_max 1), y = x / (s·g), the base from the k-th smallest |x|
// of the block's `real` elements (the rest is row padding), its levels, and the codes of y
// (nearest or stochastic, random word at the element's index `start + j`). `zeroed`: the block
// held a NaN or ±inf and is quantized as zeros (nonfinite="ocp"; the caller stores the NaN
// scale). `lv` is scratch for the levels (LF_MAX_LOG_LEVELS floats). Returns false when the
// levels collide (Rust's "alpha" error).

#define LF_MAX_LOG_LEVELS 256

LF_FN bool lf_logq_block(const float* xb, lf_u32 blen, lf_u32 real, bool zeroed, int rule,
                         float global, lf_u32 bits, bool is_signed, bool zero, float quantile,
                         int mode, lf_u64 seed, lf_u64 stream, lf_u64 start, float* lv,
                         lf_u8* codes, float* scale_out, float* alpha_out) {
    float amax = zeroed ? 0.0f : lf_f32_from_bits(lf_amax_key_of(xb, blen) & 0x7FFFFFFFu);
    float s = lf_block_scale(rule, amax, 1.0f, false, 0u, global);
    *scale_out = s;
    float sd = s * global;
    float v = 1.0f;
    if (amax > 0.0f) {
        lf_u32 k = lf_quantile_rank(quantile, real);
        v = lf_f32_from_bits(lf_kth_smallest_abs_bits(xb, real, k)) / amax;
    }
    lf_u32 nz = lf_log_nonzero(bits, is_signed, zero);
    float a = lf_f32_from_bits(lf_alpha_from_quantile_bits(v, nz));
    *alpha_out = a;
    bool ok = lf_log_levels(bits, is_signed, zero, a, lv);
    lf_i32 nlev = (lf_i32)lf_log_nlev(bits, is_signed, zero);
    for (lf_u32 j = 0; j < blen; ++j) {
        float y = zeroed ? 0.0f : lf_block_normalize(xb[j], sd);
        codes[j] = lf_is_stochastic(mode)
                       ? lf_table_stochastic(lv, nlev, y, lf_random_word(mode, seed, stream, start + j))
                       : lf_table_nearest(lv, nlev, y);
    }
    return ok;
}
