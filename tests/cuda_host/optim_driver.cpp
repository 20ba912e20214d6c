// Host driver of the fused optimizer steps (python/lowfp/cuda/kernels/lowfp_optim.cuh):
// compiled with g++ -O2 -std=c++17 -ffp-contract=off -shared -fPIC by
// tests/test_cuda_optim_host.py and called through ctypes. lf_host_step runs the very tile
// function the CUDA kernel runs (one thread, LF_TILE_FOR a plain loop), tile by tile over every
// tensor of a descriptor array, so the test holds the kernel's arithmetic equal to Rust's.
#include <vector>

#include "lowfp_optim.cuh"

extern "C" {

// Byte sizes of the descriptors (the test checks them against the NumPy dtypes).
lf_u64 lf_host_state_desc_size() { return sizeof(lf_state_desc); }
lf_u64 lf_host_tensor_desc_size() { return sizeof(lf_tensor_desc); }

// One fused step over `count` tensors; tiles of `tile` elements (a multiple of `block`).
// word, bit, tab, t0, ntab: the device-skip context (lf_step_ctx; word null: none).
// Returns the OR of the bad flags (1: log levels collided; 8: a step number outside tab).
lf_u32 lf_host_step(int op, const lf_tensor_desc* descs, lf_u64 count, lf_u32 block,
                    lf_u32 tile, lf_u64 seed, int param_mode, const lf_u32* word,
                    lf_i64 bit, const double* tab, lf_i64 t0, lf_i64 ntab) {
    lf_step_ctx ctx = {word, bit, tab, t0, ntab};
    lf_u32 bad = 0;
    lf_u32 nb = tile / block;
    std::vector<float> vals[LF_MAX_STATES], lev[LF_MAX_STATES];
    std::vector<lf_u8> codes(tile);
    std::vector<lf_u32> amax(LF_MAX_STATES * nb), sel(3 * nb);
    lf_tile_scratch sc;
    for (int k = 0; k < LF_MAX_STATES; ++k) {
        vals[k].resize(tile);
        lev[k].resize((lf_u64)nb * LF_MAX_LEVELS);
        sc.vals[k] = vals[k].data();
        sc.levels[k] = lev[k].data();
    }
    sc.codes = codes.data();
    sc.amax = amax.data();
    sc.sel = sel.data();
    for (lf_u64 t = 0; t < count; ++t) {
        lf_tensor_desc d;
        if (!lf_resolve_step(descs[t], ctx, &d, &bad)) continue;
        for (lf_u64 start = 0; start < d.n; start += tile) {
            lf_u32 len = (lf_u32)(d.n - start < tile ? d.n - start : tile);
            lf_step_tile(op, d, start, len, block, seed, param_mode, sc, &bad);
        }
    }
    return bad;
}

// The non-finite check of a step (lf_check_tile over every tile): ORs 1 << bit into *word
// when a gradient element is NaN or ±inf.
void lf_host_check(const lf_tensor_desc* descs, lf_u64 count, lf_u32 tile, lf_u32* word,
                   lf_u32 bit) {
    for (lf_u64 t = 0; t < count; ++t)
        for (lf_u64 start = 0; start < descs[t].n; start += tile) {
            lf_u32 len = (lf_u32)(descs[t].n - start < tile ? descs[t].n - start : tile);
            if (descs[t].grad) lf_check_tile(descs[t], start, len, word, 1u << bit);
        }
}

// Blockwise quantization with a log codec whose base comes from a quantile of each block
// (rust/block.rs quantize_group with Elem::Log { quantile > 0 }), absmax scales, flat: the
// per-block function lf_logq_block the kernel lf_block_logq runs, then packing.
// Returns 1 when some block's levels collide, else 0.
int lf_host_blockwise_logq(const float* x, lf_u64 n, lf_u32 block, lf_u32 bits, int is_signed,
                           int zero, float quantile, int mode, lf_u64 seed, lf_u64 stream,
                           float* scales, float* alphas, lf_u8* packed) {
    int bad = 0;
    std::vector<lf_u8> codes(n);
    std::vector<float> lv(LF_MAX_LEVELS);
    for (lf_u64 lo = 0; lo < n; lo += block) {
        lf_u32 blen = (lf_u32)(n - lo < block ? n - lo : block);
        lf_u64 b = lo / block;
        if (!lf_logq_block(x + lo, blen, blen, false, LF_SCALE_ABSMAX, 1.0f, bits,
                           is_signed != 0, zero != 0, quantile, mode, seed, stream, lo,
                           lv.data(), codes.data() + lo, scales + b, alphas + b))
            bad = 1;
    }
    lf_u64 len = lf_packed_len(n, bits);
    for (lf_u64 j = 0; j < len; ++j) packed[j] = lf_pack_byte(codes.data(), n, bits, j);
    return bad;
}

}  // extern "C"
