// lowfp_optim.cu — multi-tensor fused optimizer steps (AdamW with or without AMSGrad, SGD
// momentum, Muon momentum), compiled by CuPy (NVRTC, --fmad=false) with the kernels directory
// on the include path.
//
// Design notes
// - One launch per param group: `meta` holds the tile prefix (count + 1 u64: tiles before each
//   tensor) followed by the tensors' lf_tensor_desc records, uploaded as one byte array. One
//   CUDA block runs one tile (whole state blocks) of one tensor, found by binary search in the
//   prefix, through lf_step_tile — the function the host check runs against the Rust core.
// - The step's scalars live in the descriptors (data, not source): no recompiles when the
//   learning rate changes. Nothing is read back: `bad` stays on the device.
// - Shared memory (dynamic), nv = 3 for AMSGrad, else 2: vals[nv][tile] f32 | amax[nv·nb] u32 |
//   sel[3·nb] u32 | levels0[nb·nlev0] f32 | levels1[nb·nlev1] f32 | levels2[nb·nlev2] f32 |
//   codes[tile] u8.
// - Device skip (lf_step_ctx in lowfp_optim.cuh): lf_optim_check ORs a device word when a
//   gradient is not finite; lf_optim_step reads it and the device step counts, so no step
//   waits for the host. Every thread of a block takes the same early return (the word is
//   written by an earlier launch), so no barrier is left half-reached.
#include "lowfp_optim.cuh"

/// The tensor of tile b (prefix[t] <= b < prefix[t + 1]) by binary search.
__device__ __forceinline__ lf_u64 lf_tile_tensor(const lf_u64* prefix, lf_u64 count, lf_u64 b) {
    lf_u64 lo = 0, hi = count;
    while (hi - lo > 1) {
        lf_u64 mid = (lo + hi) >> 1;
        if (prefix[mid] <= b) lo = mid;
        else hi = mid;
    }
    return lo;
}

/// The non-finite gradient check of a step over a tile plan (every group's tensors in one):
/// ORs 1 << bit into *word when a gradient element is NaN or ±inf. Launched before any step
/// kernel of the step; the host clears the bit first.
extern "C" __global__ void lf_optim_check(const unsigned char* meta, lf_u64 count, lf_u32 tile,
                                          lf_u32* word, lf_u32 bit) {
    const lf_u64* prefix = (const lf_u64*)meta;
    const lf_tensor_desc* descs = (const lf_tensor_desc*)(meta + 8 * (count + 1));
    lf_u64 b = blockIdx.x;
    lf_u64 ti = lf_tile_tensor(prefix, count, b);
    const lf_tensor_desc& t = descs[ti];
    lf_u64 start = (b - prefix[ti]) * tile;
    lf_u32 len = (lf_u32)(t.n - start < tile ? t.n - start : tile);
    if (t.grad) lf_check_tile(t, start, len, word, 1u << bit);
}

extern "C" __global__ void lf_optim_step(int op, const unsigned char* meta, lf_u64 count,
                                         lf_u32 block, lf_u32 tile, lf_u64 seed,
                                         int param_mode, lf_u32 nlev0, lf_u32 nlev1,
                                         lf_u32 nlev2, lf_u32* bad, const lf_u32* word,
                                         lf_i64 bit, const double* tab, lf_i64 t0,
                                         lf_i64 ntab) {
    extern __shared__ float lf_smem[];
    const lf_u64* prefix = (const lf_u64*)meta;
    const lf_tensor_desc* descs = (const lf_tensor_desc*)(meta + 8 * (count + 1));
    lf_u64 b = blockIdx.x;
    lf_u64 lo = lf_tile_tensor(prefix, count, b);
    lf_step_ctx ctx = {word, bit, tab, t0, ntab};
    lf_tensor_desc t;
    if (!lf_resolve_step(descs[lo], ctx, &t, bad)) return;  // the whole block: no barrier
    lf_u64 start = (b - prefix[lo]) * tile;
    lf_u32 len = (lf_u32)(t.n - start < tile ? t.n - start : tile);
    lf_u32 nb = tile / block;
    lf_u32 nv = op == LF_OP_ADAMW_AMSGRAD ? 3u : 2u;
    lf_tile_scratch sc;
    sc.vals[0] = lf_smem;
    sc.vals[1] = lf_smem + tile;
    sc.vals[2] = lf_smem + 2 * tile;  // used by AMSGrad only (nv = 3)
    sc.amax = (lf_u32*)(lf_smem + nv * tile);
    sc.sel = sc.amax + nv * nb;
    sc.levels[0] = lf_smem + nv * tile + (nv + 3) * nb;
    sc.levels[1] = sc.levels[0] + nb * nlev0;
    sc.levels[2] = sc.levels[1] + nb * nlev1;
    sc.codes = (lf_u8*)(sc.levels[2] + nb * nlev2);
    lf_step_tile(op, t, start, len, block, seed, param_mode, sc, bad);
}
