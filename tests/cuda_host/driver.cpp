// Host driver of the CUDA element header: compiled with g++ -O2 -std=c++17 -ffp-contract=off
// -shared -fPIC by tests/test_cuda_host.py and called through ctypes over whole arrays, so the
// per-element functions the kernels use are checked bit for bit against the Rust core.
// Each entry point loops over elements exactly like the matching kernel in
// python/lowfp/cuda/kernels/lowfp_kernels.cu does per thread.
#include <vector>

#include "lowfp_elem.cuh"

extern "C" {

void lf_host_random(int mode, lf_u64 seed, lf_u64 stream, lf_u64 offset, lf_u64 n,
                    lf_u32* out) {
    for (lf_u64 i = 0; i < n; ++i) out[i] = lf_random_word(mode, seed, stream, offset + i);
}

// Encode n elements of kind `kind`; random bits from `rbits` when non-null, else Philox at
// global index offset + i. Writes codes (u32) and returns the OR of the bad flags; the index
// of the first bad element goes to *first_bad (n when none).
lf_u32 lf_host_encode(const void* x, int kind, lf_u64 n, lf_u32 exp_bits, lf_u32 man_bits,
                      lf_i32 bias, lf_u32 flags, int mode, lf_u64 seed, lf_u64 stream,
                      lf_u64 offset, const lf_u32* rbits, lf_u32* out, lf_u64* first_bad) {
    lf_enc f = lf_make_enc(exp_bits, man_bits, bias, flags);
    lf_u32 all = 0;
    *first_bad = n;
    for (lf_u64 i = 0; i < n; ++i) {
        lf_u32 r = 0;
        if (lf_is_stochastic(mode))
            r = rbits ? rbits[i] : lf_random_word(mode, seed, stream, offset + i);
        lf_u32 bad = 0;
        out[i] = lf_encode_parts_dyn(f, lf_load_parts(x, i, kind), mode, r, &bad);
        if (bad && *first_bad == n) *first_bad = i;
        all |= bad;
    }
    return all;
}

// The special codes of a format's setup: max_code, inf_code, nan_code(+), nan_code(-),
// overflow_code (the setup `Format::max_code_mag` / `inf_code_mag` / `nan_code` mirror).
void lf_host_format_codes(lf_u32 exp_bits, lf_u32 man_bits, lf_i32 bias, lf_u32 flags,
                          lf_u32* out) {
    lf_enc f = lf_make_enc(exp_bits, man_bits, bias, flags);
    out[0] = f.max_code;
    out[1] = f.inf_code;
    out[2] = lf_nan_code(f, false);
    out[3] = lf_nan_code(f, true);
    out[4] = f.overflow_code;
}

// float32 bits of each code's value (payload: keep NaN payloads of float32-prefix formats).
void lf_host_decode(const lf_u32* codes, lf_u64 n, lf_u32 exp_bits, lf_u32 man_bits,
                    lf_i32 bias, lf_u32 flags, int payload, lf_u32* out) {
    lf_enc f = lf_make_enc(exp_bits, man_bits, bias, flags);
    for (lf_u64 i = 0; i < n; ++i) out[i] = lf_decode_f32_bits(f, codes[i], payload != 0);
}

// quantize: encode then the value in the input's kind; out has the input's element width.
lf_u32 lf_host_quantize(const void* x, int kind, lf_u64 n, lf_u32 exp_bits, lf_u32 man_bits,
                        lf_i32 bias, lf_u32 flags, int mode, lf_u64 seed, lf_u64 stream,
                        lf_u64 offset, void* out) {
    lf_enc f = lf_make_enc(exp_bits, man_bits, bias, flags);
    lf_u32 all = 0;
    for (lf_u64 i = 0; i < n; ++i) {
        lf_u32 r = lf_is_stochastic(mode) ? lf_random_word(mode, seed, stream, offset + i) : 0u;
        lf_u32 c = lf_encode_parts_dyn(f, lf_load_parts(x, i, kind), mode, r, &all);
        lf_u64 v = lf_quantize_out_bits(f, c, kind);
        switch (kind) {
            case LF_IN_F64: ((lf_u64*)out)[i] = v; break;
            case LF_IN_F32: ((lf_u32*)out)[i] = (lf_u32)v; break;
            default: ((lf_u16*)out)[i] = (lf_u16)v; break;
        }
    }
    return all;
}

void lf_host_table_encode(const float* x, lf_u64 n, const float* levels, int nlev,
                          int mode, lf_u64 seed, lf_u64 stream, lf_u64 offset,
                          lf_u8* out) {
    for (lf_u64 i = 0; i < n; ++i) {
        out[i] = lf_is_stochastic(mode)
                     ? lf_table_stochastic(levels, nlev, x[i],
                                           lf_random_word(mode, seed, stream, offset + i))
                     : lf_table_nearest(levels, nlev, x[i]);
    }
}

void lf_host_pack(const lf_u8* codes, lf_u64 n, lf_u32 k, lf_u8* out) {
    lf_u64 len = lf_packed_len(n, k);
    for (lf_u64 j = 0; j < len; ++j) out[j] = lf_pack_byte(codes, n, k, j);
}

void lf_host_unpack(const lf_u8* packed, lf_u64 len, lf_u32 k, lf_u64 n, lf_u8* out) {
    for (lf_u64 i = 0; i < n; ++i) out[i] = lf_unpack_code(packed, len, k, i);
}

// Blockwise quantize, the kernels of lowfp.cuda in sequence: block amax keys, the tensor
// scale, block scales, element codes (normalized x / (s·g), ExMy or table), then packing.
// Returns the tensor scale g. exmy: the element format (exp_bits > 0) else the table
// `levels`. `codes` is scratch (n). ocp: nonfinite="ocp" (marked blocks: zeros, NaN scale);
// else the return value is meaningless when *nonfinite is set.
float lf_host_blockwise(const float* x, lf_u64 n, lf_u64 block, int rule, lf_u32 exp_bits,
                        lf_u32 man_bits, lf_i32 bias, lf_u32 flags, const float* levels,
                        int nlev, float elem_max, int mode, lf_u64 seed, lf_u64 stream,
                        lf_u32 code_bits, int ocp, lf_u8* codes, float* scales, lf_u8* packed,
                        lf_u32* nonfinite) {
    bool exmy = exp_bits > 0;
    lf_u64 nb = (n + block - 1) / block;
    std::vector<lf_u32> keys(nb);
    lf_u32 finite = 0;
    *nonfinite = 0;
    for (lf_u64 b = 0; b < nb; ++b) {  // lf_block_amax
        lf_u64 lo = b * block, hi = lo + block < n ? lo + block : n;
        keys[b] = lf_amax_key_of(x + lo, hi - lo);
        if (keys[b] & LF_AMAX_NONFINITE) *nonfinite = 1;
        lf_u32 f = keys[b] & 0x7FFFFFFFu;
        finite = f > finite ? f : finite;
    }
    float global = lf_global_scale_of(rule, finite, elem_max);  // lf_global_scale
    lf_enc f = exmy ? lf_make_enc(exp_bits, man_bits, bias, flags) : lf_enc_f16();
    for (lf_u64 b = 0; b < nb; ++b) {
        lf_u64 lo = b * block, hi = lo + block < n ? lo + block : n;
        float s = lf_block_scale_key(rule, keys[b], elem_max, exmy, man_bits, global);
        scales[b] = s;
        float sd = s * global;
        for (lf_u64 i = lo; i < hi; ++i) {  // lf_block_codes
            float y = lf_block_normalize(x[i], sd);
            lf_u32 r = lf_is_stochastic(mode) ? lf_random_word(mode, seed, stream, i) : 0u;
            if (exmy) {
                lf_u32 bad = 0;
                codes[i] = (lf_u8)lf_encode_parts_dyn(f, lf_parts_f32(lf_f32_bits(y)), mode, r,
                                                      &bad);
            } else {
                codes[i] = lf_is_stochastic(mode) ? lf_table_stochastic(levels, nlev, y, r)
                                                  : lf_table_nearest(levels, nlev, y);
            }
        }
    }
    (void)ocp;  // the codes of a marked block follow from its NaN scale (y = 0)
    lf_host_pack(codes, n, code_bits, packed);
    return global;
}

// Blockwise quantize with a Log(quantile=q) codec, as the kernels lf_block_amax,
// lf_global_scale and lf_block_logq do it, then packing. row > 0: rows of `row` real
// elements padded to `per_row` blocks. Returns 1 when some block's levels collide.
int lf_host_blockwise_logq_rows(const float* x, lf_u64 n, lf_u64 block, lf_u64 row,
                                lf_u64 per_row, int rule, lf_u32 bits, int is_signed, int zero,
                                float quantile, int mode, lf_u64 seed, lf_u64 stream, int ocp,
                                lf_u8* codes, float* scales, float* alphas, lf_u8* packed,
                                float* global_out) {
    lf_u64 nb = (n + block - 1) / block;
    std::vector<lf_u32> keys(nb);
    lf_u32 finite = 0;
    for (lf_u64 b = 0; b < nb; ++b) {
        lf_u64 lo = b * block, hi = lo + block < n ? lo + block : n;
        keys[b] = lf_amax_key_of(x + lo, hi - lo);
        lf_u32 f = keys[b] & 0x7FFFFFFFu;
        finite = f > finite ? f : finite;
    }
    float g = lf_global_scale_of(rule, finite, 1.0f);
    *global_out = g;
    int bad = 0;
    float lv[LF_MAX_LOG_LEVELS];
    for (lf_u64 b = 0; b < nb; ++b) {  // lf_block_logq, one block per thread there
        lf_u64 lo = b * block;
        lf_u32 blen = (lf_u32)(lo + block < n ? block : n - lo);
        lf_u32 real = blen;
        if (row > 0) {
            lf_u64 at = (b % per_row) * block;
            real = (lf_u32)(row - at < blen ? row - at : blen);
        }
        bool marked = (keys[b] & LF_AMAX_NONFINITE) != 0;
        if (!lf_logq_block(x + lo, blen, real, ocp && marked, rule, g, bits, is_signed != 0,
                           zero != 0, quantile, mode, seed, stream, lo, lv, codes + lo,
                           scales + b, alphas + b))
            bad = 1;
        if (ocp && marked) scales[b] = lf_f32_from_bits(LF_F32_NAN_BITS);
    }
    lf_host_pack(codes, n, bits, packed);
    return bad;
}

}  // extern "C"
