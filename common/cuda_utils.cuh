// cuda_utils.cuh: the CUDA basics every GPU header uses: error checks with file:line, bf16
// helpers, device properties, one-block allocations and event timers, and the device helpers
// several kernel headers share (8-wide bf16 vectors, warp and block reductions).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "utils.h"

typedef __nv_bfloat16 bf16;

// ----------------------------------------------------------------------------
// error checks: report the failing call's file:line and a hint, then exit

inline void cuda_check(cudaError_t err, const char *file, int line) {
    if (err != cudaSuccess)
        fatal_code(4, "CUDA error at %s:%d: %s (%s)%s", file, line, cudaGetErrorString(err), cudaGetErrorName(err),
                   err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver
                       ? " HINT: no usable GPU here; run with --device cpu for the CPU reference path"
                       : err == cudaErrorMemoryAllocation ? " HINT: out of GPU memory; lower TRAIN_BATCH_TOKENS" : "");
}
#define cudaCheck(err) cuda_check((err), __FILE__, __LINE__)

// After a kernel launch: the launch error now; with -DSYNC_CHECK also the execution error.
#ifdef SYNC_CHECK
#define cudaCheckLaunch() do { cudaCheck(cudaGetLastError()); cudaCheck(cudaDeviceSynchronize()); } while (0)
#else
#define cudaCheckLaunch() cudaCheck(cudaGetLastError())
#endif

template <typename T>
inline void cuda_free_check(T *&p, const char *file, int line) {
    if (p) cuda_check(cudaFree(p), file, line);
    p = nullptr;
}
#define cudaFreeCheck(p) cuda_free_check(p, __FILE__, __LINE__)

inline int ceil_div(long a, long b) { return (int)((a + b - 1) / b); }
// blocks for n items at per_block a block, at least 1 and at most 65535 (grid-stride kernels)
inline int grid_blocks(size_t n, int per_block) { return (int)std::min<size_t>(std::max<size_t>((n + per_block - 1) / per_block, 1), 65535); }
inline bool aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

// ----------------------------------------------------------------------------
// device info

struct DeviceInfo {
    int id = 0, sm_count = 0, cc_major = 0, cc_minor = 0;
    size_t smem_optin = 0, l2_bytes = 0, total_mem = 0;
    char name[256] = {0};
};
inline DeviceInfo device_info(int id = 0) {
    DeviceInfo d;
    cudaDeviceProp p;
    cudaCheck(cudaGetDeviceProperties(&p, id));
    d.id = id;
    d.sm_count = p.multiProcessorCount;
    d.cc_major = p.major;
    d.cc_minor = p.minor;
    d.smem_optin = p.sharedMemPerBlockOptin;
    d.l2_bytes = p.l2CacheSize;
    d.total_mem = p.totalGlobalMem;
    snprintf(d.name, sizeof d.name, "%s", p.name);
    return d;
}

// ----------------------------------------------------------------------------
// host <-> device copies of float data as bf16 or fp32

inline void to_device_bf16(__nv_bfloat16 *d, const float *h, size_t n) {
    std::vector<__nv_bfloat16> tmp(n);
    for (size_t i = 0; i < n; i++) tmp[i] = __float2bfloat16(h[i]);
    cudaCheck(cudaMemcpy(d, tmp.data(), n * sizeof(__nv_bfloat16), cudaMemcpyHostToDevice));
}
inline void from_device_bf16(float *h, const __nv_bfloat16 *d, size_t n) {
    std::vector<__nv_bfloat16> tmp(n);
    cudaCheck(cudaMemcpy(tmp.data(), d, n * sizeof(__nv_bfloat16), cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; i++) h[i] = __bfloat162float(tmp[i]);
}

// ----------------------------------------------------------------------------
// timing with events (device work is asynchronous)

struct GpuTimer {
    cudaEvent_t a, b;
    GpuTimer() { cudaCheck(cudaEventCreate(&a)); cudaCheck(cudaEventCreate(&b)); }
    ~GpuTimer() { cudaEventDestroy(a); cudaEventDestroy(b); }
    void start(cudaStream_t s = 0) { cudaCheck(cudaEventRecord(a, s)); }
    float stop_ms(cudaStream_t s = 0) {
        cudaCheck(cudaEventRecord(b, s));
        cudaCheck(cudaEventSynchronize(b));
        float ms;
        cudaCheck(cudaEventElapsedTime(&ms, a, b));
        return ms;
    }
};

// ----------------------------------------------------------------------------
// device helpers shared by the kernel headers

// x rounded to bf16 and back: a value as the reference's bf16 tensors hold it
__device__ inline float bf16_round(float x) { return __bfloat162float(__float2bfloat16(x)); }

namespace lyr {

// 8 bf16 <-> 8 floats, one 16-byte access
__device__ __forceinline__ void load8(float (&f)[8], const bf16 *p) {
    const uint4 u = *reinterpret_cast<const uint4 *>(p);
    const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&u);
#pragma unroll
    for (int j = 0; j < 4; j++) {
        const float2 t = __bfloat1622float2(h[j]);
        f[2 * j] = t.x;
        f[2 * j + 1] = t.y;
    }
}
// 8 fp32 values of a parameter table that may be only 4-byte aligned
__device__ __forceinline__ void load8(float (&f)[8], const float *p) {
#pragma unroll
    for (int j = 0; j < 8; j++) f[j] = p[j];
}
__device__ __forceinline__ void store8(bf16 *p, const float (&f)[8]) {
    uint4 u;
    __nv_bfloat162 *h = reinterpret_cast<__nv_bfloat162 *>(&u);
#pragma unroll
    for (int j = 0; j < 4; j++) h[j] = __floats2bfloat162_rn(f[2 * j], f[2 * j + 1]);
    *reinterpret_cast<uint4 *>(p) = u;
}
__device__ __forceinline__ void zero8(float (&f)[8]) {
#pragma unroll
    for (int j = 0; j < 8; j++) f[j] = 0.f;
}
// a control parameter as the reference uses it: cast to bf16
__device__ __forceinline__ float rnd(float x) { return __bfloat162float(__float2bfloat16(x)); }
__device__ __forceinline__ float sigmoid(float x) { return 1.f / (1.f + expf(-x)); }
__device__ __forceinline__ float nan_value() { return __int_as_float(0x7fc00000); }

// Butterfly reductions: every lane ends with the same bits (each step adds two equal-order
// partials, and a + b == b + a exactly), so the result is deterministic.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
// Sum over a 1-D block (whole warps), the same in every thread. sh: >= 32 floats of shared memory.
__device__ __forceinline__ float block_sum(float v, float *sh) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();  // sh may still be read by a previous call
    if (lane == 0) sh[w] = v;
    __syncthreads();
    return warp_sum(lane < nw ? sh[lane] : 0.f);
}

}  // namespace lyr
