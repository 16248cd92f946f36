// cuda_utils.cuh: the CUDA basics every GPU header uses: error checks with file:line, bf16
// helpers, device properties, one-block allocations and event timers, and the device helpers
// several kernel headers share (8-wide bf16 vectors, warp and block reductions; the sm90
// primitives of the Hopper kernels: mbarriers, TMA, wgmma descriptors).
#pragma once

#include <cuda.h>  // CUtensorMap (types only: the driver is reached through cudaGetDriverEntryPointByVersion)
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cudaTypedefs.h>  // PFN_cuTensorMapEncodeTiled (the Hopper kernels' TMA)

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
// where the GPU time goes, by kernel family (PROFILE=1 in train_gpt; dev/bench.sh)
//
// Every launcher opens a ProfScope naming its family. When the profiler is on, the outermost
// scope records an event as it opens and another as it closes (nested launchers, such as the
// GEMMs inside the optimizer step, count for the outer one), so the time between two events
// belongs to the family of the scope that opened there, and the time between a close and the
// next open is a gap: host launch latency, memsets, and whatever no scope covers. Off, a scope
// costs one branch. On, it adds two event records per launch, so a profiled step is a little
// slower than a plain one: report both.

enum ProfFamily : int { PROF_ATTN_FWD, PROF_ATTN_BWD, PROF_GEMM, PROF_MEMBOUND, PROF_LOSS, PROF_OPTIM, PROF_COMM, PROF_GAP, PROF_FAMILIES };
inline const char *prof_family_name(int f) {
    static const char *names[PROF_FAMILIES] = {"attention fwd", "attention bwd", "GEMMs (cuBLASLt)", "memory-bound layers",
                                               "loss (head CE)", "optimizer+weights", "communication", "gaps"};
    return f >= 0 && f < PROF_FAMILIES ? names[f] : "?";
}

struct Profiler {
    bool on = false;
    int depth = 0;                    // scopes open now (only the outermost records)
    std::vector<cudaEvent_t> events;  // a pool, grown on demand
    std::vector<int> family;          // family[i]: whose time runs from events[i] to events[i+1]
    size_t n = 0;                     // events recorded since the last collect
    double ms[PROF_FAMILIES] = {};    // accumulated by profiler_collect
    long calls[PROF_FAMILIES] = {};
};
inline Profiler &profiler() {
    static Profiler p;
    return p;
}
inline void profiler_record(int fam, cudaStream_t s) {
    Profiler &p = profiler();
    if (p.n == p.events.size()) {
        p.events.emplace_back();
        p.family.push_back(0);
        cudaCheck(cudaEventCreate(&p.events.back()));
    }
    cudaCheck(cudaEventRecord(p.events[p.n], s));
    p.family[p.n++] = fam;
}
// Wait for the recorded events and add their intervals to ms[]; the pool is reused after.
inline void profiler_collect() {
    Profiler &p = profiler();
    if (p.n == 0) return;
    cudaCheck(cudaEventSynchronize(p.events[p.n - 1]));
    for (size_t i = 0; i + 1 < p.n; i++) {
        float t;
        cudaCheck(cudaEventElapsedTime(&t, p.events[i], p.events[i + 1]));
        p.ms[p.family[i]] += t;
        if (p.family[i] != PROF_GAP) p.calls[p.family[i]]++;
    }
    p.n = 0;
}
inline void profiler_reset() {
    Profiler &p = profiler();
    p.n = 0;
    for (int f = 0; f < PROF_FAMILIES; f++) p.ms[f] = 0, p.calls[f] = 0;
}
struct ProfScope {
    cudaStream_t s;
    bool rec;
    ProfScope(int fam, cudaStream_t stream) : s(stream), rec(profiler().on && profiler().depth++ == 0) {
        if (rec) profiler_record(fam, s);
    }
    ~ProfScope() {
        if (!profiler().on) return;
        profiler().depth--;
        if (rec) profiler_record(PROF_GAP, s);
    }
    ProfScope(const ProfScope &) = delete;
    ProfScope &operator=(const ProfScope &) = delete;
};

// ----------------------------------------------------------------------------
// device helpers shared by the kernel headers

// x rounded to bf16 and back: a value as the reference's bf16 tensors hold it
__device__ inline float bf16_round(float x) { return __bfloat162float(__float2bfloat16(x)); }

// RoPE of one value y with its partner p (dim i + rd/2 for i < rd/2, else i - rd/2) and the table
// entries c = cos, s = sin of its pair: x1 cos + x2 sin below rd/2, -x1 sin + x2 cos above
// (explicit _rn operations: the q/k kernels of layers.cuh and the fused epilogue of matmul.cuh
// give the same bits)
__device__ __forceinline__ float qk_rot_lo(float y, float p, float c, float s) { return __fmaf_rn(y, c, __fmul_rn(p, s)); }
__device__ __forceinline__ float qk_rot_hi(float y, float p, float c, float s) { return __fmaf_rn(y, c, -__fmul_rn(p, s)); }
// and its transpose (the inverse), for the backward: d1 cos - d2 sin below rd/2, d1 sin + d2 cos
// above (d: the value, p: its partner); the q/k backward of layers.cuh and the k norm in the
// attention backward's epilogue (attention.cuh)
__device__ __forceinline__ float qk_rotT_lo(float d, float p, float c, float s) { return __fmaf_rn(d, c, -__fmul_rn(p, s)); }
__device__ __forceinline__ float qk_rotT_hi(float d, float p, float c, float s) { return __fmaf_rn(p, s, __fmul_rn(d, c)); }

namespace lyr {

// 8 bf16 (one 16-byte word, e.g. loaded ahead of the math) as 8 floats
__device__ __forceinline__ void unpack8(float (&f)[8], const uint4 &u) {
    const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&u);
#pragma unroll
    for (int j = 0; j < 4; j++) {
        const float2 t = __bfloat1622float2(h[j]);
        f[2 * j] = t.x;
        f[2 * j + 1] = t.y;
    }
}
// 8 bf16 as they are in memory, one 16-byte load (e.g. issued ahead of the math; unpack8 later)
__device__ __forceinline__ uint4 load_word(const bf16 *p) { return *reinterpret_cast<const uint4 *>(p); }
// 8 bf16 <-> 8 floats, one 16-byte access. The word is loaded into a local first: unpack8 reads
// it as four bf16 pairs, and through a reference straight into global memory nvcc 13.0 emitted
// those as four 4-byte loads (LDG.E) instead of one 16-byte load (LDG.E.128).
__device__ __forceinline__ void load8(float (&f)[8], const bf16 *p) {
    const uint4 u = load_word(p);
    unpack8(f, u);
}
// 8 fp32 values of a parameter table that may be only 4-byte aligned
__device__ __forceinline__ void load8(float (&f)[8], const float *p) {
#pragma unroll
    for (int j = 0; j < 8; j++) f[j] = p[j];
}
// 8 floats rounded to bf16 as one 16-byte word (e.g. to store, or to shuffle as 4 words)
__device__ __forceinline__ uint4 pack8(const float (&f)[8]) {
    uint4 u;
    __nv_bfloat162 *h = reinterpret_cast<__nv_bfloat162 *>(&u);
#pragma unroll
    for (int j = 0; j < 4; j++) h[j] = __floats2bfloat162_rn(f[2 * j], f[2 * j + 1]);
    return u;
}
__device__ __forceinline__ void store8(bf16 *p, const float (&f)[8]) { *reinterpret_cast<uint4 *>(p) = pack8(f); }
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

// ----------------------------------------------------------------------------
// sm90 primitives (inline PTX) of the Hopper kernels (attention.cuh's forward and backward,
// matmul.cuh's MLP GEMM): smem addresses, mbarriers, TMA, wgmma descriptors / fences / waits,
// named barriers, setmaxnreg, the sm_90a probe and the tensor-map encoder. They compile in any
// build (the kernels that use them check __CUDA_ARCH_FEAT_SM90_ALL and are empty elsewhere).

namespace sm90 {

__device__ __forceinline__ uint32_t smem_u32(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
// make the initialized barriers visible to the other threads and to the async (TMA) proxy
__device__ __forceinline__ void mbar_init_fence() {
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
// one arrival that also announces `bytes` of transactions (the TMA boxes) still to land
__device__ __forceinline__ void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
// one plain arrival (a consumer warp releasing a stage)
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
// wait until the barrier's phase with parity `parity` has completed. A protocol bug (a byte
// count that never arrives, a phase never released) would hang the GPU forever (try_wait may
// sleep a while per poll, so a poll count is no clock): after 10 s of the global timer, store
// to address 0, so the launch fails with "an illegal memory access was encountered". Not
// __trap(): a trap in a wait loop makes ptxas allocate a warp-specialized kernel's consumers at
// the launch's register count (e.g. 168 of a 384-thread launch) instead of their setmaxnreg
// count (setmaxnreg then buys nothing: spills, or wgmma serialized (C7512), once they need more).
// The timer is read after every failed poll (the early return keeps the loop's live state to
// bar, parity and t_start: polling the timer every 256th try made the forward's v9 consumers
// spill 24 bytes at their 160 registers).
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
    uint32_t done = 0;
    uint64_t t_start = 0;
    for (int spins = 0;; spins++) {
        asm volatile(
            "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
            : "=r"(done)
            : "r"(bar), "r"(parity)
            : "memory");
        if (done) return;
        uint64_t now;
        asm volatile("mov.u64 %0, %%globaltimer;\n" : "=l"(now));
        if (spins == 0) t_start = now;
        else if (now - t_start > 10000000000ull) asm volatile("st.global.u32 [%0], 0;\n" ::"l"(0ull) : "memory");
    }
}
// TMA: the box at coordinates (c0, c1) of a 2-D tensor map -> shared memory at dst (as below)
__device__ __forceinline__ void tma_load_2d(uint32_t dst, const void *tmap, uint32_t bar, int c0, int c1) {
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(dst),
                 "l"(tmap), "r"(c0), "r"(c1), "r"(bar)
                 : "memory");
}
// TMA: the box at coordinates (c0, c1, c2, c3) of a 4-D tensor map -> shared memory at dst;
// completion (the box's full size in bytes, zero-filled parts included) is signalled on bar
__device__ __forceinline__ void tma_load_4d(uint32_t dst, const void *tmap, uint32_t bar, int c0, int c1, int c2, int c3) {
    asm volatile(
        "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, %5}], "
        "[%6];\n" ::"r"(dst),
        "l"(tmap), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(bar)
        : "memory");
}
// generic-proxy shared stores -> visible to wgmma / TMA (the async proxy)
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
// TMA reduce-add: global (4-d tensor map box at c0..c3) += shared (fp32), as a bulk async group
__device__ __forceinline__ void tma_reduce_add_4d(const void *tmap, uint32_t src, int c0, int c1, int c2, int c3) {
    asm volatile("cp.reduce.async.bulk.tensor.4d.global.shared::cta.add.tile.bulk_group [%0, {%1, %2, %3, %4}], [%5];\n" ::"l"(tmap),
                 "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(src)
                 : "memory");
}
// TMA store: shared memory at src -> the box at (c0, c1) of a 2-D tensor map (elements past the
// tensor's edges are not written), as a bulk async group (bulk_commit, bulk_wait_*)
__device__ __forceinline__ void tma_store_2d(const void *tmap, uint32_t src, int c0, int c1) {
    asm volatile("cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%0, {%1, %2}], [%3];\n" ::"l"(tmap), "r"(c0), "r"(c1),
                 "r"(src)
                 : "memory");
}
__device__ __forceinline__ void bulk_commit() { asm volatile("cp.async.bulk.commit_group;\n" ::: "memory"); }
// all but the newest N bulk groups have finished reading their shared memory
template <int N>
__device__ __forceinline__ void bulk_wait_read() { asm volatile("cp.async.bulk.wait_group.read %0;\n" ::"n"(N) : "memory"); }
// every bulk group has completed (its global writes performed)
__device__ __forceinline__ void bulk_wait_all() { asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory"); }
// wgmma shared-memory descriptor of a 128-byte-swizzled tile starting at `addr` (TMA's
// SWIZZLE_128B layout: 128-byte rows, the 16-byte chunk c of row r at c ^ (r % 8), tile bases
// 1024-byte aligned). In the PTX ISA's canonical layouts, the stride byte offset is the step
// between 8-row groups (K-major: 8 rows of M/N; MN-major: 8 rows of K), 1024 bytes for such
// tiles; the leading byte offset `lbo` is unused by K-major swizzled tiles and steps between
// 64-column swizzle atoms of an MN-major one (the conventional 16 when there is one atom, as
// for the attention's V; the MLP GEMM's MN-major B has 4, 8 KiB apart).
__device__ __forceinline__ uint64_t wgmma_desc(uint32_t addr, uint32_t lbo = 16) {
    return (uint64_t)((addr & 0x3FFFF) >> 4) | ((uint64_t)((lbo >> 4) & 0x3FFF) << 16) | ((uint64_t)(1024 >> 4) << 32) |
           ((uint64_t)1 << 62);
}
// The descriptor of the tile `off` bytes past d's: only the start-address field (bits 0..13,
// address / 16) moves, so one 32-bit add replaces wgmma_desc's masks and shifts (ptxas kept ~5
// uniform instructions per operand per wgmma in the attention kernels' loops). The field cannot
// carry into the next one: shared memory addresses stay below the 256 KB the field spans (an
// SM has 228 KB), and off is a multiple of 16 (every k-step and tile offset is).
__device__ __forceinline__ uint64_t wgmma_desc_at(uint64_t d, uint32_t off) {
    return (d & 0xFFFFFFFF00000000ull) | (uint32_t)((uint32_t)d + (off >> 4));
}
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// D (64 x 128 fp32, 64 registers: 16 n8 tiles) (+)= A B, both K-major (attention's S = Q K^T on
// 128 keys; the ping-pong q, k, v GEMM, matmul.cuh). Empty outside sm_90a device code.
__device__ __forceinline__ void wgmma_m64n128k16_ss(float (&d)[64], uint64_t desc_a, uint64_t desc_b, bool accumulate) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
        "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, "
        "%64, %65, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(desc_a), "l"(desc_b), "r"(accumulate ? 1 : 0));
#endif
}
// keep the compiler from moving accesses of an accumulator across wgmma issue/wait: its first
// N registers (reg_fence_first: an accumulator that uses part of its array), or all of them
template <int N>
__device__ __forceinline__ void reg_fence_first(float *d) {
#pragma unroll
    for (int i = 0; i < N; i++) asm volatile("" : "+f"(d[i])::"memory");
}
template <int N>
__device__ __forceinline__ void reg_fence(float (&d)[N]) { reg_fence_first<N>(d); }
// named barriers (0 is __syncthreads): bar.sync waits until `count` threads (a multiple of 32)
// have reached the barrier, counting bar.arrive's threads, which do not wait
__device__ __forceinline__ void named_bar_sync(int id, int count) {
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}
__device__ __forceinline__ void named_bar_arrive(int id, int count) {
    asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}
// hand registers back to the SM (producer) or take them (consumers): the per-thread count of
// the whole warpgroup becomes N
template <int N>
__device__ __forceinline__ void setmaxnreg_dec() {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N) : "memory");
}
template <int N>
__device__ __forceinline__ void setmaxnreg_inc() {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N) : "memory");
}

// 1 when the device code running here was compiled for sm_90a (the Hopper kernels' bodies are
// empty in any other build, e.g. an sm_80 build JIT-compiled on an H100, or compute_90 without "a")
__global__ void sm90_probe_kernel(int *has) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    *has = 1;
#else
    *has = 0;
#endif
}


// cuTensorMapEncodeTiled from the driver through the runtime (so no -lcuda); the one entry point
// of every TMA tensor map (the attention's bwd_tensor_map / h90_tensor_map, the MLP GEMM's)
inline PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
    static PFN_cuTensorMapEncodeTiled_v12000 fn = nullptr;
    if (!fn) {
        void *p = nullptr;
        cudaDriverEntryPointQueryResult res;
        cudaCheck(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &res));
        if (res != cudaDriverEntryPointSuccess || !p)
            fatal_config("the driver has no cuTensorMapEncodeTiled (needs CUDA 12+)");
        fn = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
    }
    return fn;
}

}  // namespace sm90

// Whether the Hopper kernels can run here: an sm_90 device running this build's sm_90a code.
// Asked once (a one-thread probe launch); callers take their portable kernels otherwise.
inline bool sm90_available() {
    static int has = -1;
    if (has < 0) {
        int dev = 0, major = 0;
        cudaCheck(cudaGetDevice(&dev));
        cudaCheck(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
        has = 0;
        if (major == 9) {
            int *d = nullptr;
            cudaCheck(cudaMalloc(&d, sizeof(int)));
            sm90::sm90_probe_kernel<<<1, 1>>>(d);
            cudaCheckLaunch();
            cudaCheck(cudaMemcpy(&has, d, sizeof(int), cudaMemcpyDeviceToHost));
            cudaCheck(cudaFree(d));
        }
    }
    return has == 1;
}
