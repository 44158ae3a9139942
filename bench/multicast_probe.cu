// A probe, not product code (bench/multicast_probe.py builds and times it): can a thread-block cluster that
// multicasts a shared node's KV tiles to its CTAs feed them faster than each CTA gathering the tiles itself?
//
// Why (kernels/NOTES.md, fortieth session): the forward reads a node's KV once per 64-row block of the node's query
// rows, so at GQA 12-16 a node shared by 128 requests is gathered by 32 CTAs, and the trees' time follows the
// planned KV bytes, not the unique ones. If a cluster of C CTAs on one node got each tile by one multicast, the
// gathers per tile would drop C-fold.
//
// Work: N nodes of T tokens. A node's K and V rows (ROW_BYTES each per token: one KV head of d128 in 16 bits) sit at
// slots p.slots[n * T + i] of two pools. R CTAs per node (the row blocks) read every one of the node's tiles (TILE
// tokens: 2 * TILE rows, K then V) into a STAGES-deep ring and consume each by summing its 16-bit values (every
// thread its 64 bytes of the stage), then write their sum to p.out[blockIdx.x]; the host checks each against the
// node's float64 sum. The CTAs of one node are consecutive blocks, so clusters of consecutive blocks hold one node
// (R a multiple of CLUSTER).
//
// Every CTA first copies its node's slot indices (at most MAX_TOKENS) into shared memory, so that no mode's copies
// wait on a dependent global load of their slot (the forward reads its slots a tile ahead for the same reason).
//
// PROBE_MODE (a -D option, with STAGES, and CLUSTER for mode 2):
//   0 gather:    every thread issues 16-byte cp.async copies of its share of a tile (the forward's loader pattern),
//                the ring handed on by cp.async groups and CTA barriers.
//   1 bulk:      warp 0 issues each row as one 256-byte cp.async.bulk onto the stage's full mbarrier; no cluster.
//   2 multicast: clusters of CLUSTER CTAs; CTA rank r issues the rows j with j % CLUSTER == r, each multicast to every
//                CTA of the cluster (the same offset in each). Each CTA's full[s] expects the whole stage's bytes
//                (one arrival, by its warp 0, with the byte count); a stage is refilled once every CTA of the
//                cluster has consumed it: each CTA arrives on every CTA's empty[s] (count CLUSTER), and a CTA issues
//                into stage s only after its own empty[s] phase completes. The CTAs meet at a cluster barrier after
//                their barriers are made and before any exits (peers write into each other's shared memory).

#include <cuda_bf16.h>

#if !defined(PROBE_MODE) || !defined(STAGES)
#error "build through bench/multicast_probe.py: PROBE_MODE and STAGES (and CLUSTER for mode 2) are -D options"
#endif
#if PROBE_MODE == 2
#ifndef CLUSTER
#error "PROBE_MODE 2 needs CLUSTER"
#endif
#define PROBE_CLUSTER CLUSTER
#else
#define PROBE_CLUSTER 1
#endif

constexpr int THREADS = 128;
constexpr int ROW_BYTES = 256;
constexpr int TILE = 16;
constexpr int ROWS = 2 * TILE;
constexpr int STAGE_BYTES = ROWS * ROW_BYTES;
constexpr int BYTES_PER_THREAD = STAGE_BYTES / THREADS;
static_assert(BYTES_PER_THREAD % 16 == 0, "each thread consumes whole 16-byte chunks");
constexpr int MAX_TOKENS = 4096;  // a node's slots staged in shared memory: 16 KB

struct ProbeParams {
    const char* k;     // [slots, ROW_BYTES]
    const char* v;     // [slots, ROW_BYTES]
    const int* slots;  // node n's token slots at [n * T, (n + 1) * T)
    float* out;        // one sum per CTA
    int tokens;        // T, a multiple of TILE
    int rows;          // R, CTAs per node
};

extern "C" __device__ const int probe_smem_bytes = STAGES * STAGE_BYTES + MAX_TOKENS * 4;
extern "C" __device__ const int probe_max_tokens = MAX_TOKENS;

// The node's slots into shared memory behind the stages (every thread's share, then a CTA barrier).
__device__ __forceinline__ const int* stage_slots(const ProbeParams& p, char* smem) {
    int* staged = reinterpret_cast<int*>(smem + STAGES * STAGE_BYTES);
    const int* node_slots = p.slots + static_cast<size_t>(blockIdx.x / p.rows) * p.tokens;
    for (int i = threadIdx.x; i < p.tokens; i += THREADS) staged[i] = node_slots[i];
    __syncthreads();
    return staged;
}

__device__ __forceinline__ unsigned smem_addr(const void* p) {
    return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// The sum of this thread's BYTES_PER_THREAD bytes of a stage, as 16-bit floats.
__device__ __forceinline__ float consume(const char* stage) {
    float acc = 0.f;
    const char* mine = stage + threadIdx.x * BYTES_PER_THREAD;
#pragma unroll
    for (int c = 0; c < BYTES_PER_THREAD; c += 16) {
        const uint4 w = *reinterpret_cast<const uint4*>(mine + c);
        const unsigned words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const __nv_bfloat162 h = *reinterpret_cast<const __nv_bfloat162*>(&words[j]);
            const float2 f = __bfloat1622float2(h);
            acc += f.x + f.y;
        }
    }
    return acc;
}

__device__ __forceinline__ const char* row_source(const ProbeParams& p, const int* node_slots, int tile, int row) {
    const int token = tile * TILE + (row % TILE);
    const char* pool = row < TILE ? p.k : p.v;
    return pool + static_cast<size_t>(node_slots[token]) * ROW_BYTES;
}

__device__ void write_sum(const ProbeParams& p, float acc) {
    __shared__ float part[THREADS / 32];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
        float s = 0.f;
        for (int w = 0; w < THREADS / 32; w++) s += part[w];
        p.out[blockIdx.x] = s;
    }
}

#if PROBE_MODE == 0
__device__ __forceinline__ void cp_async16(unsigned dst, const void* src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src) : "memory");
}

extern "C" __global__ void __launch_bounds__(THREADS) probe(const ProbeParams p) {
    extern __shared__ __align__(128) char smem[];
    const int* node_slots = stage_slots(p, smem);
    const int tiles = p.tokens / TILE;
    auto issue = [&](int tile) {
        char* stage = smem + (tile % STAGES) * STAGE_BYTES;
        for (int c = threadIdx.x; c < ROWS * (ROW_BYTES / 16); c += THREADS) {
            const int row = c / (ROW_BYTES / 16), chunk = c % (ROW_BYTES / 16);
            cp_async16(smem_addr(stage + row * ROW_BYTES + chunk * 16), row_source(p, node_slots, tile, row) + chunk * 16);
        }
    };
    for (int t = 0; t < STAGES - 1; t++) {
        if (t < tiles) issue(t);
        asm volatile("cp.async.commit_group;\n" ::: "memory");
    }
    float acc = 0.f;
    for (int t = 0; t < tiles; t++) {
        if (t + STAGES - 1 < tiles) issue(t + STAGES - 1);  // into the stage consumed at t - 1
        asm volatile("cp.async.commit_group;\n" ::: "memory");
        asm volatile("cp.async.wait_group %0;\n" ::"n"(STAGES - 1) : "memory");  // tile t's copies have landed
        __syncthreads();
        acc += consume(smem + (t % STAGES) * STAGE_BYTES);
        __syncthreads();  // every thread is done with the stage before it is refilled
    }
    write_sum(p, acc);
}

#else  // PROBE_MODE 1 and 2: bulk copies onto mbarriers

__device__ __forceinline__ void mbar_init(unsigned addr, unsigned count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(addr), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_expect_bytes(unsigned addr, unsigned bytes) {  // one arrival + the bytes to come
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(addr), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_wait(unsigned addr, unsigned parity) {
    asm volatile(
        "{\n.reg .pred done;\nWAIT:\n"
        "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
        "@!done bra WAIT;\n}\n" ::"r"(addr), "r"(parity) : "memory");
}
// An arrival on the barrier at `addr`'s offset in cluster CTA `rank` (this CTA's own with PROBE_MODE 1).
__device__ __forceinline__ void mbar_arrive_at(unsigned addr, unsigned rank) {
#if PROBE_MODE == 2
    unsigned remote;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(remote) : "r"(addr), "r"(rank));
    asm volatile("mbarrier.arrive.release.cluster.shared::cluster.b64 _, [%0];\n" ::"r"(remote) : "memory");
#else
    (void)rank;
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(addr) : "memory");
#endif
}
__device__ __forceinline__ void bulk_row(unsigned dst, const void* src, unsigned full) {
#if PROBE_MODE == 2
    const unsigned short mask = static_cast<unsigned short>((1u << CLUSTER) - 1);
    asm volatile(
        "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster [%0], [%1], %2, [%3], %4;\n"
        ::"r"(dst), "l"(src), "n"(ROW_BYTES), "r"(full), "h"(mask) : "memory");
#else
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n"
                 ::"r"(dst), "l"(src), "n"(ROW_BYTES), "r"(full) : "memory");
#endif
}
__device__ __forceinline__ unsigned cluster_rank() {
#if PROBE_MODE == 2
    unsigned r;
    asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
    return r;
#else
    return 0;
#endif
}
__device__ __forceinline__ void cluster_sync() {
#if PROBE_MODE == 2
    asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
#endif
}

extern "C" __global__ void __launch_bounds__(THREADS)
#if PROBE_MODE == 2
    __cluster_dims__(CLUSTER, 1, 1)
#endif
    probe(const ProbeParams p) {
    extern __shared__ __align__(128) char smem[];
    __shared__ __align__(8) unsigned long long full[STAGES], empty[STAGES];
    const int* node_slots = stage_slots(p, smem);
    const int tiles = p.tokens / TILE;
    const unsigned rank = cluster_rank();
    if (threadIdx.x == 0) {
        for (int s = 0; s < STAGES; s++) {
            mbar_init(smem_addr(&full[s]), 1);
            mbar_init(smem_addr(&empty[s]), PROBE_CLUSTER);
        }
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();
    cluster_sync();  // every CTA's barriers exist before a peer copies or arrives into them
    const bool producer = threadIdx.x < 32;
    const int lane = threadIdx.x % 32;
    auto produce = [&](int tile) {  // warp 0: this CTA's rows of `tile` into its stage (and its peers')
        const int s = tile % STAGES;
        if (lane == 0) mbar_expect_bytes(smem_addr(&full[s]), STAGE_BYTES);
        for (int row = lane; row < ROWS; row += 32)
            if (row % PROBE_CLUSTER == static_cast<int>(rank))
                bulk_row(smem_addr(smem + s * STAGE_BYTES + row * ROW_BYTES), row_source(p, node_slots, tile, row),
                         smem_addr(&full[s]));
    };
    if (producer)
        for (int t = 0; t < STAGES && t < tiles; t++) produce(t);
    float acc = 0.f;
    for (int t = 0; t < tiles; t++) {
        const int s = t % STAGES;
        const unsigned parity = (t / STAGES) & 1;
        mbar_wait(smem_addr(&full[s]), parity);
        acc += consume(smem + s * STAGE_BYTES);
        __syncthreads();  // the CTA is done with the stage
        if (threadIdx.x == 0)
            for (unsigned c = 0; c < PROBE_CLUSTER; c++) mbar_arrive_at(smem_addr(&empty[s]), c);
        if (producer && t + STAGES < tiles) {
            mbar_wait(smem_addr(&empty[s]), parity);  // every CTA of the cluster is done with it
            produce(t + STAGES);
        }
    }
    write_sum(p, acc);
    cluster_sync();  // no CTA leaves while a peer may still arrive on its barriers
}
#endif
