// Host emulation of the kernel lf_optim_step (python/lowfp/cuda/kernels/lowfp_optim.cu): the
// .cu file itself compiled as C++ with -D__CUDACC__ and the few CUDA built-ins it uses
// stubbed, run with one thread per CUDA block (blockDim.x = 1, so __syncthreads is a no-op
// and the block-stride loops run serially), every block of the grid in turn. The test drives
// it with the launch plan lowfp.cuda.optim builds for CuPy (meta bytes, grid, shared memory
// size, arguments), so the device-side code path — tile lookup, shared-memory layout — runs
// against the Rust core without a GPU. Thread-level parallelism is not exercised here.
#define __host__
#define __device__
#define __global__
#define __shared__
#define __forceinline__ inline

struct lf_dim3 {
    unsigned x, y, z;
};
static lf_dim3 threadIdx = {0, 0, 0}, blockIdx = {0, 0, 0}, blockDim = {1, 1, 1};

inline void __syncthreads() {}
inline unsigned atomicMax(unsigned* a, unsigned v) {
    unsigned o = *a;
    if (v > o) *a = v;
    return o;
}
inline unsigned atomicOr(unsigned* a, unsigned v) {
    unsigned o = *a;
    *a |= v;
    return o;
}
inline unsigned atomicAdd(unsigned* a, unsigned v) {
    unsigned o = *a;
    *a += v;
    return o;
}
inline float __fsqrt_rn(float x) { return __builtin_sqrtf(x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }

// The dynamic shared memory of one block (the kernel's `extern __shared__ float lf_smem[]`).
float lf_smem[1 << 14];

#include "lowfp_optim.cu"

extern "C" {

// Run the grid; returns 0, or 2 when the plan's shared memory exceeds the emulated 64 KiB.
int lf_emu_launch(unsigned long long grid, unsigned long long smem, int op,
                  const unsigned char* meta, unsigned long long count, unsigned block,
                  unsigned tile, unsigned long long seed, int param_mode, unsigned nlev0,
                  unsigned nlev1, unsigned nlev2, unsigned* bad, const unsigned* word,
                  long long bit, const double* tab, long long t0, long long ntab) {
    if (smem > sizeof(lf_smem)) return 2;
    for (unsigned long long b = 0; b < grid; ++b) {
        blockIdx.x = (unsigned)b;
        // poison the shared memory: the kernel must not rely on leftovers
        for (unsigned long long i = 0; i < sizeof(lf_smem) / 4; ++i) lf_smem[i] = -7.25f;
        lf_optim_step(op, meta, count, block, tile, seed, param_mode, nlev0, nlev1, nlev2,
                      bad, word, bit, tab, t0, ntab);
    }
    return 0;
}

// The check kernel over the same grid.
void lf_emu_check(unsigned long long grid, const unsigned char* meta, unsigned long long count,
                  unsigned tile, unsigned* word, unsigned bit) {
    for (unsigned long long b = 0; b < grid; ++b) {
        blockIdx.x = (unsigned)b;
        lf_optim_check(meta, count, tile, word, bit);
    }
}

}  // extern "C"
