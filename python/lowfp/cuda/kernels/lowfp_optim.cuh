// lowfp_optim.cuh — the fused optimizer steps of rust/optim.rs, one tile of whole blocks at a
// time, for CUDA (one thread block per tile) and for plain C++17 (one thread, the host check).
//
// Design notes
// - A tile is a run of whole state blocks of one tensor (`tile` elements, a multiple of the
//   block size, the last tile shorter). Per tile, in this order (rust/optim.rs `run_items`):
//     1. bases of the old log-quantile states → their levels (per block);
//     2. per element: decode the states (value(code) · scale), widen the gradient and a 16-bit
//        parameter exactly, update in float32 (the same operations in the same order as Rust;
//        fmas nowhere, because Rust writes none), write the parameter (float32, or bfloat16 /
//        float16 rounded nearest or stochastically with the parameter's stream), keep the new
//        state values in scratch and fold |value| into the block's amax;
//     3. per block: the fresh absmax scale s = amax / M, for log-quantile states the k-th
//        smallest |value| (a bisection over the 31-bit keys, every thread counting), the base
//        and its levels;
//     4. per element: the code of value / s (ExMy encoder or table, nearest or stochastic with
//        the state's stream at the element's index in the tensor); 5. per byte: packing.
// - The same function runs on both sides: LF_TILE_FOR is a block-stride loop on the device and
//   a plain loop on the host, LF_TILE_SYNC a __syncthreads() or nothing, and the block amax an
//   atomicMax on bits (|v| orders like its bits, so the order of the updates does not matter).
//   The host check therefore runs exactly the code the kernel runs, serially.
// - Descriptors (lf_tensor_desc) are plain structs of 8-byte fields, built by NumPy with the
//   same layout (python/lowfp/cuda/optim.py), so one byte array drives the host driver and the
//   device kernels.
// - Rejected: a kernel per phase (decode+update, block amax, encode, pack) as the blockwise
//   codec kernels do — the updated states would round-trip through global memory in float32
//   (8 extra bytes per element and state); and one thread per state block — too little
//   parallelism for blocks of 2048 (Muon). The k-th smallest |value| of SOLO's bases is a
//   bisection over the keys with all threads counting, not a sort: no extra scratch, and the
//   value is the same for any order of the elements.
#pragma once

#include "lowfp_elem.cuh"

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define LF_TILE_FOR(i, n) for (lf_u32 i = threadIdx.x; i < (n); i += blockDim.x)
#define LF_TILE_SYNC() __syncthreads()
#define LF_SQRTF(x) __fsqrt_rn(x)
LF_FN void lf_tile_max(lf_u32* addr, lf_u32 v) { atomicMax(addr, v); }
LF_FN void lf_tile_inc(lf_u32* addr) { atomicAdd(addr, 1u); }
#else
#define LF_TILE_FOR(i, n) for (lf_u32 i = 0; i < (n); ++i)
#define LF_TILE_SYNC() ((void)0)
#define LF_SQRTF(x) __builtin_sqrtf(x)
LF_FN void lf_tile_max(lf_u32* addr, lf_u32 v) {
    if (v > *addr) *addr = v;
}
LF_FN void lf_tile_inc(lf_u32* addr) { *addr += 1u; }
#endif

// Optimizers.
#define LF_OP_ADAMW 0
#define LF_OP_SGD 1
#define LF_OP_MUON 2
#define LF_OP_ADAMW_AMSGRAD 3  // AdamW with AMSGrad's running maximum of v (a third state)

/// The most states of a tensor (AMSGrad: m, v, v_max).
#define LF_MAX_STATES 3

/// The number of states an optimizer keeps per tensor.
LF_FN int lf_op_states(int op) {
    return op == LF_OP_ADAMW_AMSGRAD ? 3 : op == LF_OP_ADAMW ? 2 : 1;
}

// State kinds.
#define LF_ST_NONE 0  // absent (SGD and Muon use state 0 only)
#define LF_ST_F32 1   // plain float32, updated in place
#define LF_ST_EXMY 2  // blockwise, ExMy elements (saturating, negatives clamped)
#define LF_ST_TABLE 3 // blockwise, fixed levels (linear, dynamic, log with a fixed base)
#define LF_ST_LOGQ 4  // blockwise, log levels with a per-block base from a quantile

/// One optimizer state of a tensor (all fields 8 bytes; pointers as addresses); LF_ST_NONE
/// (kind 0) for the states an optimizer does not keep.
struct lf_state_desc {
    lf_i64 kind, mode, code_bits;
    lf_i64 exp_bits, man_bits, bias, flags;  // ExMy format (lf_make_enc)
    lf_i64 nlev;                             // table levels
    lf_i64 log_bits, log_signed, log_zero;   // log-quantile codec
    double elem_max, quantile;
    lf_u64 stream;
    lf_u64 data;    // float32 values (LF_ST_F32) or packed codes
    lf_u64 scales;  // float32, one per block
    lf_u64 alphas;  // float32, one per block (LF_ST_LOGQ)
    lf_u64 levels;  // float32 table levels (LF_ST_TABLE)
};

/// One tensor of a multi-tensor step.
struct lf_tensor_desc {
    lf_u64 n;
    lf_i64 pkind;  // LF_IN_F32, LF_IN_F16, LF_IN_BF16
    lf_u64 param, grad;
    lf_u64 pstream;
    lf_u64 offset;  // the tensor's first element in a larger one (an FSDP shard), else 0
    lf_i64 nesterov, first;  // SGD, Muon
    double hp[8];            // float32 values held as doubles (exact): see lf_hp
    lf_state_desc st[LF_MAX_STATES];
    lf_i64 t;          // the step number as the host counts it (skips it has not seen yet too)
    lf_u64 pending;    // the earlier steps (bits of lf_step_ctx's word) the host has not seen
};

/// How a step learns, on the device, whether it runs and its step number (device skip):
/// - word: a device word with one bit per recent step (a ring of LF_SKIP_BITS steps); bit
///   `bit` is this step's, set by lf_check_tile when a gradient element is NaN or ±inf. Then
///   every tile returns before writing anything, as torch's fused optimizers do with
///   found_inf. null: no device skip (the host checked).
/// - The host counts a step before it knows whether it was skipped; a tensor's true step is
///   t − popcount(word & pending). The streams' high 32 bits become that t (lowfp's streams
///   are (t << 32) | low bits), SGD's `first` is t == 1, and the scalars hp[0..8) come from
///   row t − t0 of `tab` (8 doubles per row, t0 ≤ t < t0 + ntab, computed by the host with
///   the CPU step's own formula; null: the descriptor's hp). A t outside the table ORs 8
///   into *bad and leaves the tensor as it was (the host sizes the table so it cannot be).
#define LF_SKIP_BITS 30
struct lf_step_ctx {
    const lf_u32* word;
    lf_i64 bit;
    const double* tab;
    lf_i64 t0, ntab;
};

/// Whether the values of a tile of a gradient are all finite: ORs `mark` into *flag if not.
LF_FN void lf_check_tile(const lf_tensor_desc& t, lf_u64 start, lf_u32 len, lf_u32* flag,
                         lf_u32 mark);

/// The descriptor of this step under ctx (a copy; false: leave the tensor alone).
LF_FN bool lf_resolve_step(const lf_tensor_desc& in, const lf_step_ctx& ctx, lf_tensor_desc* out,
                           lf_u32* bad);

/// The most log levels of a log-quantile state (bits ≤ 8).
#define LF_MAX_LEVELS 256

/// The exact float32 value of a parameter or gradient element (`Half::to_f32`).
LF_FN float lf_load_f32(lf_u64 addr, lf_u64 i, lf_i64 kind) {
    if (kind == LF_IN_F32) return ((const float*)addr)[i];
    lf_u32 b = ((const lf_u16*)addr)[i];
    if (kind == LF_IN_BF16) return lf_f32_from_bits(b << 16);
    lf_u32 sign = (b & 0x8000u) << 16, e = (b >> 10) & 0x1Fu, m = b & 0x3FFu;
    lf_u32 mag;
    if (e == 0) mag = lf_f32_bits((float)m * lf_f32_from_bits(0x33800000u));  // m · 2^-24
    else if (e == 31) mag = 0x7F800000u | (m << 13);
    else mag = ((e + 112) << 23) | (m << 13);
    return lf_f32_from_bits(sign | mag);
}

/// Write the updated parameter: float32 as is, 16-bit floats rounded (`to_half`: the named
/// bfloat16/float16 encoder, default options, `mode` LF_NEAREST or a stochastic mode keyed by
/// (seed, pstream, index)).
LF_FN void lf_store_param(const lf_tensor_desc& t, lf_u64 i, float v, int mode, lf_u64 seed) {
    if (t.pkind == LF_IN_F32) {
        ((float*)t.param)[i] = v;
        return;
    }
    lf_enc f = t.pkind == LF_IN_BF16 ? lf_enc_bf16() : lf_enc_f16();
    lf_parts p = lf_parts_f32(lf_f32_bits(v));
    lf_u32 bad = 0, c;
    if (lf_is_stochastic(mode))
        c = lf_encode_parts<LF_STOCHASTIC>(f, p, lf_random_word(mode, seed, t.pstream, t.offset + i),
                                           &bad);
    else c = lf_encode_parts<LF_NEAREST>(f, p, 0u, &bad);
    ((lf_u16*)t.param)[i] = (lf_u16)c;
}

LF_FN lf_enc lf_state_enc(const lf_state_desc& s) {
    return lf_make_enc((lf_u32)s.exp_bits, (lf_u32)s.man_bits, (lf_i32)s.bias, (lf_u32)s.flags);
}

/// The decoded value of element i of a packed state (block-local levels `lv` for LF_ST_LOGQ).
LF_FN float lf_state_load(const lf_state_desc& s, const lf_enc& f, lf_u64 n, lf_u64 i,
                          lf_u64 block, const float* lv) {
    const lf_u8* packed = (const lf_u8*)s.data;
    lf_u32 c = lf_unpack_code(packed, lf_packed_len(n, (lf_u32)s.code_bits), (lf_u32)s.code_bits, i);
    float sd = ((const float*)s.scales)[i / block];
    float value;
    if (s.kind == LF_ST_EXMY) value = lf_f32_from_bits(lf_decode_f32_bits(f, c, false));
    else if (s.kind == LF_ST_TABLE) value = ((const float*)s.levels)[c];
    else value = lv[c];
    return value * sd;
}

/// Scratch of one tile (shared memory on the device).
struct lf_tile_scratch {
    float* vals[LF_MAX_STATES];    // new state values, `tile` each (packed states only)
    float* levels[LF_MAX_STATES];  // log-quantile states: blocks per tile × its level count
    lf_u8* codes;      // `tile`
    lf_u32* amax;      // (states) × blocks per tile
    lf_u32* sel;       // 3 × blocks per tile: the k-th smallest |value| search (lo, hi, count)
};

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
LF_FN void lf_flag(lf_u32* bad, lf_u32 v) { atomicOr(bad, v); }
#else
LF_FN void lf_flag(lf_u32* bad, lf_u32 v) { *bad |= v; }
#endif

/// The element-wise update of rust/optim.rs (adamw_update, adamw_amsgrad_update, sgd_steps,
/// muon_momentum). p: the parameter (Muon: the gradient, overwritten by the direction);
/// s[0..lf_op_states(op)): the states.
LF_FN void lf_update(int op, const lf_tensor_desc& t, float& p, float g, float* s) {
    float& s0 = s[0];
    float& s1 = s[1];
    if (op == LF_OP_ADAMW || op == LF_OP_ADAMW_AMSGRAD) {
        float decay = (float)t.hp[0], l2 = (float)t.hp[1], w1 = (float)t.hp[2];
        float beta2 = (float)t.hp[3], w2 = (float)t.hp[4], eps = (float)t.hp[5];
        float step_size = (float)t.hp[6], bc2_sqrt = (float)t.hp[7];
        float gg = g + l2 * p;
        p = p * decay;
        s0 = s0 + w1 * (gg - s0);
        s1 = beta2 * s1 + w2 * gg * gg;
        float vd = s1;  // the denominator's second moment: v, or AMSGrad's max(v_max, v)
        if (op == LF_OP_ADAMW_AMSGRAD) {
            s[2] = s1 > s[2] ? s1 : s[2];  // as Rust: gradients are finite here
            vd = s[2];
        }
        float denom = LF_SQRTF(vd) / bc2_sqrt + eps;
        p = p - step_size * (s0 / denom);
    } else if (op == LF_OP_SGD) {
        float lr = (float)t.hp[0], momentum = (float)t.hp[1], w = (float)t.hp[2];
        float wd = (float)t.hp[3];
        float d = g + wd * p;
        s0 = t.first ? d : momentum * s0 + w * d;
        float step = t.nesterov ? d + momentum * s0 : s0;
        p = p - lr * step;
    } else {
        float beta = (float)t.hp[0];
        float gv = p;
        s0 = s0 + (1.0f - beta) * (gv - s0);
        p = t.nesterov ? gv + beta * (s0 - gv) : s0;
    }
}

/// Level count of a log-quantile state.
LF_FN lf_u32 lf_logq_nlev(const lf_state_desc& s) {
    return lf_log_nlev((lf_u32)s.log_bits, s.log_signed != 0, s.log_zero != 0);
}

/// Levels of a log-quantile state with base alpha into lv (false: they collide).
LF_FN bool lf_logq_levels(const lf_state_desc& s, float alpha, float* lv) {
    return lf_log_levels((lf_u32)s.log_bits, s.log_signed != 0, s.log_zero != 0, alpha, lv);
}

/// The geometry of one tile: elements [start, start + len) of a tensor, nb blocks from b0.
struct lf_tile {
    lf_u64 start, b0;
    lf_u32 len, block, nb;
};

/// Length of block b of a tile (the tensor's last block may be short).
LF_FN lf_u32 lf_block_len(const lf_tile& g, lf_u32 b) {
    return b * g.block + g.block < g.len ? g.block : g.len - b * g.block;
}

/// Phase 1: levels of an old log-quantile state from its stored bases (one block per thread).
LF_FN void lf_tile_old_levels(const lf_state_desc& s, const lf_tile& g, float* lv, lf_u32* bad) {
    lf_u32 nl = lf_logq_nlev(s);
    LF_TILE_FOR(b, g.nb) {
        if (!lf_logq_levels(s, ((const float*)s.alphas)[g.b0 + b], lv + b * nl)) lf_flag(bad, 1u);
    }
}

/// Phase 2: per element, decode the states, update, write the parameter and in-place float32
/// states; keep the new values of packed states in scratch and fold |value| into block amax.
LF_FN void lf_tile_update(int op, int nst, const lf_tensor_desc& t, const lf_tile& g,
                          const lf_enc* enc, lf_u64 seed, int param_mode,
                          const lf_tile_scratch& sc) {
    LF_TILE_FOR(j, g.len) {
        lf_u64 i = g.start + j;
        float s[LF_MAX_STATES] = {0.0f, 0.0f, 0.0f};
        for (int k = 0; k < nst; ++k) {
            const lf_state_desc& st = t.st[k];
            const float* lv = st.kind == LF_ST_LOGQ
                                  ? sc.levels[k] + (j / g.block) * lf_logq_nlev(st)
                                  : (const float*)0;
            s[k] = st.kind == LF_ST_F32 ? ((const float*)st.data)[i]
                                        : lf_state_load(st, enc[k], t.n, i, g.block, lv);
        }
        float p = lf_load_f32(t.param, i, t.pkind);
        float gr = op == LF_OP_MUON ? 0.0f : lf_load_f32(t.grad, i, t.pkind);
        lf_update(op, t, p, gr, s);
        lf_store_param(t, i, p, param_mode, seed);
        for (int k = 0; k < nst; ++k) {
            if (t.st[k].kind == LF_ST_F32) {
                ((float*)t.st[k].data)[i] = s[k];
            } else {
                sc.vals[k][j] = s[k];
                lf_tile_max(&sc.amax[k * g.nb + j / g.block], lf_f32_bits(s[k]) & 0x7FFFFFFFu);
            }
        }
    }
}

/// Phase 3a: the k-th smallest |value| of every block of the tile at once (bits into
/// sel[0..nb)), by the bisection of lf_kth_smallest_abs_bits — the same probes, so the same
/// answer: 31 rounds of counting keys ≤ mid with all threads, then narrowing per block. The
/// same thread owns block b in every per-block loop, so resets and reads of cnt[b] need no sync.
LF_FN void lf_tile_select(const lf_state_desc& st, const lf_tile& g, const float* vals,
                          lf_u32* sel) {
    lf_u32 *lo = sel, *hi = sel + g.nb, *cnt = sel + 2 * g.nb;
    LF_TILE_FOR(b, g.nb) {
        lo[b] = 0u;
        hi[b] = 0x7FFFFFFFu;
    }
    for (int round = 0; round < 31; ++round) {
        LF_TILE_FOR(b, g.nb) cnt[b] = 0u;
        LF_TILE_SYNC();
        LF_TILE_FOR(j, g.len) {
            lf_u32 b = j / g.block;
            lf_u32 mid = lo[b] + ((hi[b] - lo[b]) >> 1);
            if (lo[b] < hi[b] && (lf_f32_bits(vals[j]) & 0x7FFFFFFFu) <= mid) lf_tile_inc(&cnt[b]);
        }
        LF_TILE_SYNC();
        LF_TILE_FOR(b, g.nb) {
            if (lo[b] < hi[b]) {
                lf_u32 mid = lo[b] + ((hi[b] - lo[b]) >> 1);
                if (cnt[b] > lf_quantile_rank((float)st.quantile, lf_block_len(g, b))) hi[b] = mid;
                else lo[b] = mid + 1;
            }
        }
    }
}

/// Phase 3b: fresh absmax scales (and for log-quantile states the bases and their levels).
LF_FN void lf_tile_scales(const lf_state_desc& st, const lf_tile& g, const lf_u32* amax,
                          const lf_u32* kth, float* lv, lf_u32* bad) {
    LF_TILE_FOR(b, g.nb) {
        float m = lf_f32_from_bits(amax[b]);
        ((float*)st.scales)[g.b0 + b] = m / (float)st.elem_max;
        if (st.kind == LF_ST_LOGQ) {
            float v = m > 0.0f ? lf_f32_from_bits(kth[b]) / m : 1.0f;
            lf_u32 nz = lf_log_nonzero((lf_u32)st.log_bits, st.log_signed != 0, st.log_zero != 0);
            float a = lf_f32_from_bits(lf_alpha_from_quantile_bits(v, nz));
            ((float*)st.alphas)[g.b0 + b] = a;
            if (!lf_logq_levels(st, a, lv + b * lf_logq_nlev(st))) lf_flag(bad, 1u);
        }
    }
}

/// Phase 4: the code of each element from value / scale (nearest or stochastic).
LF_FN void lf_tile_codes(const lf_state_desc& st, const lf_tile& g, const lf_enc& enc,
                         lf_u64 seed, lf_u64 offset, const float* vals, const float* lvs,
                         lf_u8* codes) {
    bool table = st.kind == LF_ST_TABLE;
    lf_i32 nlev = table ? (lf_i32)st.nlev : (lf_i32)lf_logq_nlev(st);
    LF_TILE_FOR(j, g.len) {
        lf_u64 i = g.start + j;
        float y = lf_block_normalize(vals[j], ((const float*)st.scales)[g.b0 + j / g.block]);
        bool sr = lf_is_stochastic(st.mode);
        lf_u32 r = sr ? lf_random_word(st.mode, seed, st.stream, offset + i) : 0u;
        if (st.kind == LF_ST_EXMY) {
            lf_u32 b = 0;
            lf_parts pp = lf_parts_f32(lf_f32_bits(y));
            codes[j] = (lf_u8)(sr ? lf_encode_parts<LF_STOCHASTIC>(enc, pp, r, &b)
                                  : lf_encode_parts<LF_NEAREST>(enc, pp, 0u, &b));
        } else {
            const float* lv = table ? (const float*)st.levels : lvs + (j / g.block) * nlev;
            codes[j] = sr ? lf_table_stochastic(lv, nlev, y, r) : lf_table_nearest(lv, nlev, y);
        }
    }
}

/// Phase 5: the tile's packed bytes (start is a multiple of the block, so of 8: whole bytes).
LF_FN void lf_tile_pack(const lf_state_desc& st, const lf_tile& g, const lf_u8* codes) {
    lf_u32 kb = (lf_u32)st.code_bits;
    lf_u64 byte0 = g.start / 8 * kb;
    lf_u32 nbytes = (lf_u32)lf_packed_len(g.len, kb);
    LF_TILE_FOR(j, nbytes) ((lf_u8*)st.data)[byte0 + j] = lf_pack_byte(codes, g.len, kb, j);
}

LF_FN void lf_check_tile(const lf_tensor_desc& t, lf_u64 start, lf_u32 len, lf_u32* flag,
                         lf_u32 mark) {
    LF_TILE_FOR(j, len) {
        float g = lf_load_f32(t.grad, start + j, t.pkind);
        if ((lf_f32_bits(g) & 0x7F800000u) == 0x7F800000u) lf_flag(flag, mark);
    }
}

LF_FN lf_i32 lf_popcount32(lf_u32 x) {
#ifdef __CUDA_ARCH__
    return __popc(x);
#else
    return __builtin_popcount(x);
#endif
}

LF_FN bool lf_resolve_step(const lf_tensor_desc& in, const lf_step_ctx& ctx, lf_tensor_desc* out,
                           lf_u32* bad) {
    *out = in;
    if (!ctx.word) return true;
    lf_u32 w = *ctx.word;
    if ((w >> ctx.bit) & 1u) return false;
    lf_i64 t = in.t - lf_popcount32(w & (lf_u32)in.pending);
    lf_u64 hi = (lf_u64)t << 32;
    out->pstream = hi | (in.pstream & 0xFFFFFFFFull);
    for (int k = 0; k < LF_MAX_STATES; ++k)
        out->st[k].stream = hi | (in.st[k].stream & 0xFFFFFFFFull);
    out->first = t == 1;
    if (ctx.tab) {
        lf_i64 row = t - ctx.t0;
        if (row < 0 || row >= ctx.ntab) {
            lf_flag(bad, 8u);
            return false;
        }
        for (int k = 0; k < 8; ++k) out->hp[k] = ctx.tab[row * 8 + k];
    }
    return true;
}

/// One tile of one tensor: elements [start, start + len) (start a multiple of `block`), the
/// phases above separated by barriers. ORs 1 into *bad when log levels collide (where Rust
/// raises its "alpha" error).
LF_FN void lf_step_tile(int op, const lf_tensor_desc& t, lf_u64 start, lf_u32 len, lf_u32 block,
                        lf_u64 seed, int param_mode, const lf_tile_scratch& sc,
                        lf_u32* bad) {
    lf_tile g;
    g.start = start;
    g.len = len;
    g.block = block;
    g.nb = (len + block - 1) / block;
    g.b0 = start / block;
    const int nst = lf_op_states(op);
    lf_enc enc[LF_MAX_STATES];
    for (int k = 0; k < nst; ++k) {
        enc[k] = t.st[k].kind == LF_ST_EXMY ? lf_state_enc(t.st[k]) : lf_enc_f16();
        if (t.st[k].kind == LF_ST_LOGQ) lf_tile_old_levels(t.st[k], g, sc.levels[k], bad);
    }
    LF_TILE_FOR(b, (lf_u32)nst * g.nb) sc.amax[b] = 0u;
    LF_TILE_SYNC();
    lf_tile_update(op, nst, t, g, enc, seed, param_mode, sc);
    LF_TILE_SYNC();
    for (int k = 0; k < nst; ++k) {
        const lf_state_desc& st = t.st[k];
        if (st.kind == LF_ST_F32) continue;
        if (st.kind == LF_ST_LOGQ) {
            lf_tile_select(st, g, sc.vals[k], sc.sel);
            LF_TILE_SYNC();
        }
        lf_tile_scales(st, g, sc.amax + k * g.nb, sc.sel, sc.levels[k], bad);
        LF_TILE_SYNC();
        lf_tile_codes(st, g, enc[k], seed, t.offset, sc.vals[k], sc.levels[k], sc.codes);
        LF_TILE_SYNC();
        lf_tile_pack(st, g, sc.codes);
        LF_TILE_SYNC();
    }
}
