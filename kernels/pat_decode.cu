// pat_decode.cu: the forward and merge stages of pack-forward-merge decode attention.
//
// Compiled at run time with NVRTC (pat_sglang/kernels.py), one module per (dtype, head dim):
//   -DPAT_DTYPE_BF16 or -DPAT_DTYPE_FP16, -DHEAD_DIM=64|128|256, -DKV_TILE=N, -DSTAGES=S, -DPAT_WARPS=W,
//   -DPAT_MIN_BLOCKS=B (the tile table in configs/tiles/ picks them per arch and head dim); -DPAT_WGMMA (built for
//   sm_90a): 64-row items on warpgroup MMAs (below).
//   -DPAT_KV_FP8=__NV_E4M3|__NV_E5M2 (from pat_sglang/kernels.py FP8_KV_FORMATS): the KV pools hold FP8 bytes
//   (SGLang's --kv-cache-dtype fp8_e4m3 / fp8_e5m2) while q and out stay in the 16-bit dtype; without it the
//   pools hold the 16-bit dtype.
//
// pat_pack_forward: one CTA per (work item, KV head); grid = (num_kv_heads, items), PAT_WARPS warps.
//   A work item is a range [kv_begin, kv_end) of positions in the slot table (one member's row of SGLang's
//   req_to_token, or of the caller's kv_indices) plus up to TILE_M/G requests of its pack (G = q heads per
//   KV head); the slot indices are read here, on the device, a tile ahead of the gathers. Its query rows are (request, q head of this KV group) pairs: M = requests * G rows, the M of
//   an MMA tile, so a shared KV tile is read from HBM once for every request and every head of the group.
//   Open items (kv_end == ITEM_OPEN_END: the last split of a request's private leaf, one request) end where that
//   request's row ends now: kv_end = req_rows[r] * row_stride + seq_lens[r], read here from SGLang's own per-request
//   arrays (forward_batch.req_pool_indices and seq_lens, int64; under CUDA graphs the runner's static buffers), so
//   one plan serves the following decode steps while every request grows by a token per step.
//
//   FP8 KV. The stages hold the pool's FP8 bytes (half the bytes of a 16-bit tile per cp.async); once a tile
//   has landed, it is converted (exactly: every FP8 value is an fp16 value) into one fp16 K and V tile in the
//   swizzled layout below (by all threads, behind a second barrier), and the MMA code reads that tile as it reads a
//   16-bit stage: the MMAs run in fp16 whatever the query dtype (bf16 Q rows are converted once per item; see the
//   element types below). Items on mma.sync (in wgmma builds those of 16 and 32 rows; 16-row items only without the
//   hardware FP8 conversion) at head dims of whole 128-byte FP8 rows (PAT_FP8_KV_REGS: d128, d256) convert nothing
//   into shared memory: their MMA operands come from the FP8 stage itself (rows chunk-swizzled),
//   converted in registers. S's K fragments (fp8_k_fragment) hold each k16 step's dims permuted, and Q's rows are
//   permuted the same way once per item (permute_q_rows); P V's V fragments (fp8_v_fragments) pair two token rows
//   byte by byte, and their n8 blocks hold O's dims permuted, which the write puts back (o_pair). The
//   scales are SGLang's (dequantised = stored * scale): the K scale is folded into scale_log2 on the host
//   (q . (s_k k) = s_k (q . k)), the V scale multiplies each output row once (P (s_v V) = s_v (P V)).
//
//   Tiling. The item's tile m (16..16*PAT_WARPS, chosen per item by the planner) sets the warp layout at
//   run time: ROW_WARPS = m/16 warps each own 16 query rows; KV_WARPS = min(PAT_WARPS/ROW_WARPS,
//   KV_TILE/16) warps split every KV tile's columns between them. All warps load; warps beyond
//   ROW_WARPS*KV_WARPS only load, except on 16-row items of at least GROUP_MIN_TOKENS tokens (tile_group_loop, 16-token
//   tiles of 16-bit pools or FP8 tiles read from the stage): there GROUP_TILES tiles go behind one barrier, each split
//   between KV_TILE/16 warps, through the deeper pipeline that the Q rows (and FP8's converted tile) such an item
//   leaves unused make room for; FP8 items there issue each group's gathers after its MMAs (group_pipeline's
//   LATE), since there every warp both computes and gathers. Each layout is one
//   template instantiation behind a switch on the item's tile m. CTAs of one item's KV heads are adjacent in the
//   grid, so they read the neighbouring head rows of each token at about the same time.
//   KV streams through shared memory in tiles of KV_TILE tokens, STAGES deep (STAGES-1 tiles in flight
//   while one is computed on), with cp.async 16-byte gathers: each token row of one KV head is
//   HEAD_DIM*2 contiguous bytes in SGLang's pool [num_slots, num_kv_heads, head_dim], gathered through
//   the slot indices, so paged and unpaged pools read the same way. Rows past the end are zero-filled,
//   never read. A thread's pool pointers and stage addresses are resolved once per CTA (KvLoader); a tile then
//   costs it one slot load, one 32 x 32 -> 64-bit multiply and its cp.asyncs.
//   S = Q K^T and O += P V run on tensor cores (mma.sync m16n8k16, fp32 accumulate); Q, K, V come
//   from shared memory through ldmatrix (V transposed; each warp walks its columns 16 at a time, one k16
//   step of P V, so the S fragment stays at 8 registers), rows XOR-swizzled in 16-byte chunks so the
//   ldmatrix phases hit distinct banks; a lane's ldmatrix address of each k16 step is one XOR away from its
//   first (lane_chunk_addr). Softmax is online, in the log2 domain: scores masked only in the block that holds
//   kv_end, the scale applied inside each exp's FMA, 2^x on the SFU alone (fast_exp2); a warp rescales its O
//   accumulators only on tiles where one of its rows' running max moves (-DPAT_RESCALE_SLACK_LOG2).
//   Warpgroup MMAs (-DPAT_WGMMA, sm_90a, 4-warp builds): a 64-row item's four warps are one warpgroup, and its
//   Q tile and KV stages take wgmma's 128-byte-swizzle layout (swz128) so the tensor cores read them through
//   descriptors: per block of PAT_WG_COLS KV columns (16, 32 or 64), S = HEAD_DIM/16 chained wgmma m64nNk16 (Q and K
//   by descriptor), the same online softmax on the accumulators (a warp's registers have the mma.sync layout of its
//   16 rows), then O += P V as PAT_WG_COLS/16 chained wgmma m64n128k16 per 128 output columns (P from registers, V
//   by a transposed descriptor). No ldmatrix, and a quarter of the MMA instructions. 16- and 32-row items keep the
//   mma.sync path and its layout. PAT_WG_COLS > KV_TILE (the ring layout, 16-bit pools): a 64-row item lays its
//   STAGES stages out as one swz128 tile of STAGES * KV_TILE rows, so PAT_WG_COLS / KV_TILE consecutive stages are one
//   block of contiguous token rows, and its loop (wg_ring_loop) takes that many tiles per barrier; the other items
//   still stream KV_TILE tokens per step, so private rows keep their short pipeline while shared packs take wide
//   blocks.
//   At the end, with KV_WARPS = 1 each warp writes its rows straight from registers; otherwise the
//   KV_WARPS partial states are combined through fp32 slabs in shared memory. Each row goes either to the
//   output (dtype, the request's only partial) or to its partial slot (a row in the dtype + an fp32 log2-sum-exp).
//
// pat_merge: one warp per (request, q head); combines the request's partial rows with softmax weights
//   2^(lse_i - max lse) into the output. Requests with a direct output have no partials and exit.
//
// pat_wide_forward (-DPAT_WIDE=STAGES, sweep builds only: the tile table never selects it): the wide items in a launch
//   of their own on a producer warpgroup and two consumer warpgroups; its tiling is explained at its definition below.
//
// -DPAT_T8 (FP8 pools at d128 / d256, where the tile table's fp8 t8_head_dims say): long 16-row items of at most 8
//   query rows take the KV tokens as the MMA's M and the rows as N = 8 (attend_block_t8, explained there).

// Two element types: io_t, the q / out / partial dtype in global memory (-DPAT_DTYPE_*), and elem_t, the 16-bit type
// of the MMA operands in shared memory. They are one type except for FP8 pools under bf16 queries
// (PAT_FP8_F16_MMA): an FP8 pair converts to fp16 in one instruction (FP8 values are fp16 values) but to bf16 only
// through fp32 (four), and that conversion is the FP8 loop's largest block of instructions. So such builds run the
// MMAs in fp16: Q is converted once per item, scaled by 2^-PAT_Q_SHIFT_LOG2 (a power of two: exact, and |q| up to
// 2^(16 + PAT_Q_SHIFT_LOG2) stays finite; components under 2^(PAT_Q_SHIFT_LOG2 - 14) keep fp16's absolute step of
// 2^(PAT_Q_SHIFT_LOG2 - 24) instead of bf16's relative one, below the dot product's bf16 rounding), the softmax scale
// takes the 2^PAT_Q_SHIFT_LOG2 back, and P (in [0, 1]) is rounded to fp16, finer than bf16.
#if defined(PAT_DTYPE_BF16) && defined(PAT_KV_FP8)
#define PAT_FP8_F16_MMA 1
#define PAT_Q_SHIFT_LOG2 8
#endif

#if defined(PAT_DTYPE_BF16)
#include <cuda_bf16.h>
typedef __nv_bfloat16 io_t;
typedef __nv_bfloat162 io2_t;
__device__ __forceinline__ io2_t pat_float2_to_io2(float a, float b) { return __floats2bfloat162_rn(a, b); }
__device__ __forceinline__ float2 pat_io2_to_float2(io2_t x) { return __bfloat1622float2(x); }
#endif

#if defined(PAT_FP8_F16_MMA)
#include <cuda_fp16.h>
typedef __half elem_t;
typedef __half2 elem2_t;
#define PAT_MMA_TYPE "f16"
#define PAT_MMA_F16 1
__device__ __forceinline__ elem2_t pat_float2_to_elem2(float a, float b) { return __floats2half2_rn(a, b); }
#elif defined(PAT_DTYPE_BF16)
typedef __nv_bfloat16 elem_t;
typedef __nv_bfloat162 elem2_t;
#define PAT_MMA_TYPE "bf16"
__device__ __forceinline__ elem2_t pat_float2_to_elem2(float a, float b) { return __floats2bfloat162_rn(a, b); }
#elif defined(PAT_DTYPE_FP16)
#include <cuda_fp16.h>
typedef __half elem_t;
typedef __half2 elem2_t;
typedef __half io_t;
typedef __half2 io2_t;
#define PAT_MMA_TYPE "f16"
#define PAT_MMA_F16 1
__device__ __forceinline__ elem2_t pat_float2_to_elem2(float a, float b) { return __floats2half2_rn(a, b); }
__device__ __forceinline__ io2_t pat_float2_to_io2(float a, float b) { return __floats2half2_rn(a, b); }
__device__ __forceinline__ float2 pat_io2_to_float2(io2_t x) { return __half22float2(x); }
#else
#error "define PAT_DTYPE_BF16 or PAT_DTYPE_FP16"
#endif
#if defined(PAT_FP8_F16_MMA) && defined(PAT_WIDE)
#error "the wide launch reads 16-bit pools only"
#endif

#ifndef HEAD_DIM
#error "define HEAD_DIM"
#endif
#ifndef KV_TILE
#define KV_TILE 64
#endif
#ifndef STAGES
#define STAGES 2
#endif
#ifndef PAT_WG_COLS
#define PAT_WG_COLS 16  // KV columns per wgmma S block of 64-row items (16, 32 or 64; a divisor of KV_TILE)
#endif
// PAT_WG_COLS > KV_TILE (16-bit pools): a 64-row item's S block spans WG_GROUP = PAT_WG_COLS / KV_TILE consecutive
// stages, which its KV ring layout (below) keeps contiguous; its loop then takes WG_GROUP tiles per iteration.
#if PAT_WG_COLS > KV_TILE
#define PAT_WG_RING 1
#if PAT_WG_COLS % KV_TILE != 0 || STAGES % (PAT_WG_COLS / KV_TILE) != 0 || STAGES < 2 * (PAT_WG_COLS / KV_TILE)
#error "PAT_WG_COLS > KV_TILE: a multiple of KV_TILE whose tile count divides STAGES, with STAGES >= twice that count"
#endif
#ifdef PAT_KV_FP8
#error "PAT_WG_COLS > KV_TILE needs 16-bit KV pools (FP8 tiles are converted one stage at a time)"
#endif
#else
#define PAT_WG_RING 0
#if KV_TILE % PAT_WG_COLS != 0
#error "PAT_WG_COLS must divide KV_TILE"
#endif
#endif
#if PAT_WG_RING
constexpr int WG_GROUP = PAT_WG_COLS / KV_TILE;  // KV tiles per wgmma S block of a 64-row item
#endif
#ifndef PAT_RESCALE_SLACK_LOG2
#define PAT_RESCALE_SLACK_LOG2 0  // see attend_block's rescale (pat_sglang/kernels.py KernelVariant)
#endif

#define PAT_NEG_INF __int_as_float(0xff800000)
// CTAs per SM the register allocation must allow (2 caps registers at 128/thread). -DPAT_MIN_BLOCKS
// comes from the tile table; 1 where 128 registers would spill.
#ifndef PAT_MIN_BLOCKS
#define PAT_MIN_BLOCKS 1
#endif
#ifndef PAT_WARPS
#define PAT_WARPS 4  // warps per CTA (-DPAT_WARPS from the tile table)
#endif
#define PAT_THREADS (PAT_WARPS * 32)
#define MAX_TILE_M (PAT_WARPS * 16)  // the largest tile m: every warp owns 16 rows
#define CHUNKS_PER_ROW (HEAD_DIM / 8)  // 16-byte chunks in one head row

// -DPAT_TIMING: each CTA records %globaltimer at start, after its first tile landed, after the KV loop
// and at the end into pat_timing (profiling builds only; bench/ncu_probe.py reads it).
#ifdef PAT_TIMING
#define PAT_TIMING_SLOTS 65536
extern "C" __device__ unsigned long long pat_timing[PAT_TIMING_SLOTS][4];
__device__ unsigned long long pat_timing[PAT_TIMING_SLOTS][4];
// base: the first slot of the launch's CTAs (the wide launch stamps from PAT_TIMING_WIDE_BASE, pat_pack_forward from 0);
// writer: the thread that stamps.
#define PAT_TIMING_WIDE_BASE (PAT_TIMING_SLOTS / 2)
__device__ __forceinline__ void pat_stamp(int which, int base = 0, bool writer = threadIdx.x == 0) {
    if (writer) {
        const int cta = base + blockIdx.y * gridDim.x + blockIdx.x;
        unsigned long long t;
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
        if (cta < PAT_TIMING_SLOTS) pat_timing[cta][which] = t;
    }
}
#else
#define PAT_TIMING_WIDE_BASE 0
__device__ __forceinline__ void pat_stamp(int, int = 0, bool = false) {}
#endif

// Item columns and the merge CTA width come from the host (pat_sglang/planner.py ITEM_COLUMNS,
// pat_sglang/kernels.py MERGE_WARPS) as -D options: the layout has one definition.
// KV element type in the pools and the stages: the 16-bit dtype, or the FP8 bytes (converted in shared memory).
#ifdef PAT_KV_FP8
#include <cuda_fp8.h>
typedef unsigned char kv_t;
#define KV_ELEM_BYTES 1
#ifndef PAT_MMA_F16
#error "FP8 pools run fp16 MMAs"
#endif
// Items on mma.sync over FP8 pools at head dims of whole 128-byte rows take K's and V's MMA operands straight from
// the FP8 stage (fp8_k_fragment, fp8_v_fragments): the stage rows are XOR-swizzled in 16-byte chunks, Q's dims are
// permuted to match K's fragments (permute_q_rows), O's to match V's (o_pair). d64 (64-byte rows) converts K and V.
#define PAT_FP8_KV_REGS (HEAD_DIM % 128 == 0)
// The FP8 -> fp16 pair conversion is one instruction from sm_89 on; older GPUs emulate it in several, so there the
// row warps of items of more than 16 rows, which would each convert every K and V value of a tile for their own
// fragments, keep the CTA-wide conversion (one conversion per value; measured only on the H200, where both cost
// about the same: docs/perf/kernels/2026-12-01-h200-fp8-tile-groups/).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
#define PAT_FP8_HW_CVT 1
#else
#define PAT_FP8_HW_CVT 0
#endif
#else
#define PAT_FP8_KV_REGS 0
typedef elem_t kv_t;
#define KV_ELEM_BYTES 2
#endif

#if !defined(ITEM_FIELDS) || !defined(ITEM_KV_BEGIN) || !defined(ITEM_KV_END) || !defined(ITEM_REQ_BEGIN) || \
    !defined(ITEM_REQ_END) || !defined(ITEM_TILE_M) || !defined(ITEM_OPEN_END) || !defined(MERGE_WARPS)
#error "build through pat_sglang.kernels: the item layout and MERGE_WARPS are passed as -D options"
#endif

struct PatForwardParams {
    const io_t* q;          // [batch, q_heads, head_dim], request stride q_stride
    const kv_t* k;          // pool, token stride kv_stride_slot, head stride kv_stride_head (elements)
    const kv_t* v;
    io_t* out;              // [batch, q_heads, head_dim], request stride out_stride
    io_t* part_o;           // [num_partials, q_heads, head_dim], the q dtype (normalised rows: FlashInfer's merge_state
                            // keeps its partial outputs in it too); their scale lives in part_lse, fp32
    float* part_lse;        // [num_partials, q_heads], log2 domain
    const int* items;       // [num_items, ITEM_FIELDS]
    const int* slot_table;  // KV slot of each (row, position): SGLang's req_to_token, or kv_indices
    const int* item_req;
    const int* item_dst;
    const int* num_items;   // device count (CUDA-graph mode) or null: then gridDim.x items
    const long long* seq_lens;  // open items: each request's length now (SGLang's seq_lens), or null: no open items
    const long long* req_rows;  // open items: each request's row of the slot table (SGLang's req_pool_indices)
    long long q_stride;
    long long out_stride;
    long long kv_stride_slot;
    long long kv_stride_head;
    long long row_stride;   // open items: slot-table positions per row (req_to_token's row stride)
    int num_q_heads;
    int num_kv_heads;
    float scale_log2;       // softmax scale * K scale * log2(e)
    float v_scale;          // V scale: multiplies every output row (1 for 16-bit pools)
};

struct PatMergeParams {
    io_t* out;
    const io_t* part_o;
    const float* part_lse;
    const int* merge_indptr;
    const int* merge_partials;
    long long out_stride;
    int num_q_heads;
    int num_requests;
};

// The host packs these structs with ctypes (pat_sglang/kernels.py) and passes their sizes in; a field
// added or dropped on one side fails the build instead of reading garbage parameters (NVRTC has no
// offsetof, so field order is kept by hand: same order, same types).
#ifdef PAT_HOST_FWD_SIZE
static_assert(sizeof(PatForwardParams) == PAT_HOST_FWD_SIZE, "PatForwardParams differs from the host layout");
static_assert(sizeof(PatMergeParams) == PAT_HOST_MERGE_SIZE, "PatMergeParams differs from the host layout");
#endif

// Shared memory (dynamic): Q [MAX_TILE_M][D] | K [STAGES][KV_TILE][D] | V [STAGES][KV_TILE][D] (kv_t), and with
// FP8 KV one converted 16-bit K [KV_TILE][D] and V [KV_TILE][D]; after the KV loop the region is reused for the
// cross-warp combine.
constexpr int SMEM_Q_ELEMS = MAX_TILE_M * HEAD_DIM;
constexpr int SMEM_KV_ELEMS = STAGES * KV_TILE * HEAD_DIM;
#ifdef PAT_KV_FP8
constexpr int SMEM_CVT_ELEMS = KV_TILE * HEAD_DIM;  // one converted tile (elem_t), K and V each
#else
constexpr int SMEM_CVT_ELEMS = 0;
#endif
constexpr int SMEM_MAIN_BYTES = SMEM_Q_ELEMS * 2 + 2 * SMEM_KV_ELEMS * KV_ELEM_BYTES + 2 * SMEM_CVT_ELEMS * 2;
// The cross-warp combine slabs (fp32): KV_WARPS * TILE_M <= MAX_TILE_M rows of O, row maxima, row sums.
constexpr int SMEM_COMBINE_BYTES = (MAX_TILE_M * HEAD_DIM + 2 * MAX_TILE_M) * 4;
constexpr int SMEM_BYTES = SMEM_MAIN_BYTES > SMEM_COMBINE_BYTES ? SMEM_MAIN_BYTES : SMEM_COMBINE_BYTES;
// Read by the host at module load to check its own copy of this formula.
extern "C" __device__ const int pat_forward_smem_bytes = SMEM_BYTES;

// Offset (elements) of the 16-byte chunk `chunk` of row `row` in a swizzled [rows][HEAD_DIM] tile.
__device__ __forceinline__ int swz(int row, int chunk) { return row * HEAD_DIM + ((chunk ^ (row & 7)) << 3); }

// With -DPAT_WGMMA, 64-row items (one warpgroup) run on warpgroup MMAs, which read Q, K and V straight from shared
// memory through descriptors. Their tiles take wgmma's 128-byte-swizzle layout instead: the head dim in 64-element
// column blocks, each [rows][128 B], 16-byte chunk c of a row stored at chunk (c ^ row % 8) of its 128 bytes; 8 rows
// (1024 B, 1024-aligned) form one swizzle atom. Offset (elements) of chunk `chunk` of row `row` in a tile of `rows`
// rows:
__device__ __forceinline__ int swz128(int rows, int row, int chunk) {
    return ((chunk >> 3) * rows + row) * 64 + (((chunk & 7) ^ (row & 7)) << 3);
}

__device__ __forceinline__ unsigned smem_addr(const void* p) {
    return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void cp_async_16(void* dst, const void* src, bool valid) {
    const int src_bytes = valid ? 16 : 0;  // 0: zero-fill, nothing is read
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_16_at(unsigned dst, const void* src, bool valid) {  // dst: shared window
    const int src_bytes = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// 2^x on the SFU alone (ex2.approx.ftz: ~2 ulp, subnormal results flushed to 0, which a softmax weight below 2^-126
// of the row's largest never misses); exp2f without fast-math wraps it in a subnormal-range fix-up of three more
// instructions per call, on every score of the computing warps' per-tile path.
__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// ldmatrix from a shared-window byte address (see lane_chunk_addr).
__device__ __forceinline__ void ldmatrix_x4(unsigned& r0, unsigned& r1, unsigned& r2, unsigned& r3, unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned& r0, unsigned& r1, unsigned& r2, unsigned& r3,
                                                  unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}

// One 32-bit shared load from a shared-window byte address (volatile, like the ldmatrix above: the stage it reads is
// rewritten across the loop's barriers).
__device__ __forceinline__ unsigned lds_b32(unsigned addr) {
    unsigned r;
    asm volatile("ld.shared.b32 %0, [%1];\n" : "=r"(r) : "r"(addr));
    return r;
}

// A lane's ldmatrix address in a swizzled 16-bit tile (swz): chunk 2*s + h of row `row` for step s = 0. Chunk
// 2s + h lands at chunk (2s) ^ y with y = h ^ (row & 7) < 8 (2s is even: no carries), i.e. at byte offset
// row * ROW_BYTES + ((y << 4) ^ (s << 5)); with the tile at a multiple of ROW_BYTES in the shared window (the
// dynamic buffer is 1024-aligned, every tile starts at a multiple of ROW_BYTES) the address of step s is this
// one XOR (s << 5): one instruction per ldmatrix instead of the row/chunk arithmetic.
#define ROW_BYTES (HEAD_DIM * 2)
static_assert(ROW_BYTES <= 1024, "tiles are aligned to at most the buffer's 1024 bytes");
__device__ __forceinline__ unsigned lane_chunk_addr(const elem_t* tile, int row, int h) {
    return smem_addr(tile) + row * ROW_BYTES + ((h ^ (row & 7)) << 4);
}

__device__ __forceinline__ void mma_16816(float* c, unsigned a0, unsigned a1, unsigned a2, unsigned a3, unsigned b0,
                                          unsigned b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." PAT_MMA_TYPE "." PAT_MMA_TYPE
                 ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ unsigned pack_elem2(float a, float b) {
    elem2_t h = pat_float2_to_elem2(a, b);
    return *reinterpret_cast<unsigned*>(&h);
}

#ifdef PAT_WGMMA
#if !defined(__CUDA_ARCH_FEAT_SM90_ALL)
#error "PAT_WGMMA needs the sm_90a target (pat_sglang.kernels builds wgmma variants for it)"
#endif
// Warpgroup MMAs (PTX ISA 8.0 wgmma, sm_90a) for 64-row items: all four warps of the CTA issue each one together. A
// warp's accumulator registers have the mma.sync m16n8 layout for its 16 rows (register 4j + e of an N-wide result
// is element e of n8 block j), so the online softmax and the epilogue are the mma.sync path's own.

// A shared-memory matrix descriptor (PTX ISA "Matrix Descriptor Format"): start address, leading and stride byte
// offsets (each >> 4), 128-byte swizzle (layout type 1, bits 62-63). Steps within a tile add (bytes >> 4) to it:
// shared addresses stay below 2^18, so the 14-bit start field never carries.
__device__ __forceinline__ unsigned long long wg_desc(unsigned addr, unsigned lbo_bytes, unsigned sbo_bytes) {
    return static_cast<unsigned long long>((addr & 0x3FFFF) >> 4) |
           (static_cast<unsigned long long>(lbo_bytes >> 4) << 16) |
           (static_cast<unsigned long long>(sbo_bytes >> 4) << 32) | (1ull << 62);
}
__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>  // until at most N committed groups of this warpgroup's MMAs are pending
__device__ __forceinline__ void wg_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory"); }
__device__ __forceinline__ void wg_wait_all() { wg_wait<0>(); }
// Pins accumulator registers in place around the asynchronous MMAs: the compiler may not move their reads or writes
// across it (CUTLASS's warpgroup_fence_operand).
template <int N>
__device__ __forceinline__ void wg_pin(float* r) {
#pragma unroll
    for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
// The same for A fragments read from registers by an MMA in flight: kept unchanged until the wait behind the pin.
template <int N>
__device__ __forceinline__ void wg_pin_u(unsigned* r) {
#pragma unroll
    for (int i = 0; i < N; ++i) asm volatile("" : "+r"(r[i])::"memory");
}
// Shared memory written by the generic proxy (cp.async, ordinary stores) and read next by wgmma (the async proxy):
// each writing thread fences before the CTA barrier.
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// S[64 x 16] (+)= A[64 x 16] B[16 x 16]^T, both K-major in shared memory (Q rows, K tile rows).
__device__ __forceinline__ void wg_s16(float* s, unsigned long long a, unsigned long long b, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %10, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n16k16.f32." PAT_MMA_TYPE "." PAT_MMA_TYPE
        " {%0,%1,%2,%3,%4,%5,%6,%7}, %8, %9, p, 1, 1, 0, 0;\n}\n"
        : "+f"(s[0]), "+f"(s[1]), "+f"(s[2]), "+f"(s[3]), "+f"(s[4]), "+f"(s[5]), "+f"(s[6]), "+f"(s[7])
        : "l"(a), "l"(b), "r"(accumulate));
}
// The same for 32 and 64 KV columns at once (-DPAT_WG_COLS): one S chain, one softmax step and one P V chain per
// 32 or 64 tokens instead of per 16.
__device__ __forceinline__ void wg_s32(float* s, unsigned long long a, unsigned long long b, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n32k16.f32." PAT_MMA_TYPE "." PAT_MMA_TYPE
        " {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}, %16, %17, p, 1, 1, 0, 0;\n}\n"
        : "+f"(s[0]), "+f"(s[1]), "+f"(s[2]), "+f"(s[3]), "+f"(s[4]), "+f"(s[5]), "+f"(s[6]), "+f"(s[7]),
          "+f"(s[8]), "+f"(s[9]), "+f"(s[10]), "+f"(s[11]), "+f"(s[12]), "+f"(s[13]), "+f"(s[14]), "+f"(s[15])
        : "l"(a), "l"(b), "r"(accumulate));
}
__device__ __forceinline__ void wg_s64(float* s, unsigned long long a, unsigned long long b, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32." PAT_MMA_TYPE "." PAT_MMA_TYPE
        " {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,"
        "%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
        : "+f"(s[0]), "+f"(s[1]), "+f"(s[2]), "+f"(s[3]), "+f"(s[4]), "+f"(s[5]), "+f"(s[6]), "+f"(s[7]),
          "+f"(s[8]), "+f"(s[9]), "+f"(s[10]), "+f"(s[11]), "+f"(s[12]), "+f"(s[13]), "+f"(s[14]), "+f"(s[15]),
          "+f"(s[16]), "+f"(s[17]), "+f"(s[18]), "+f"(s[19]), "+f"(s[20]), "+f"(s[21]), "+f"(s[22]), "+f"(s[23]),
          "+f"(s[24]), "+f"(s[25]), "+f"(s[26]), "+f"(s[27]), "+f"(s[28]), "+f"(s[29]), "+f"(s[30]), "+f"(s[31])
        : "l"(a), "l"(b), "r"(accumulate));
}
// S[64 x NC] (+)= Q K^T for NC KV columns (16, 32 or 64).
template <int NC>
__device__ __forceinline__ void wg_s(float* s, unsigned long long a, unsigned long long b, int accumulate) {
    static_assert(NC == 16 || NC == 32 || NC == 64, "wgmma S blocks of 16, 32 or 64 KV columns");
    if constexpr (NC == 16) wg_s16(s, a, b, accumulate);
    else if constexpr (NC == 32) wg_s32(s, a, b, accumulate);
    else wg_s64(s, a, b, accumulate);
}
// O[64 x 128] += P[64 x 16] V[16 x 128]: P from registers (the mma.sync A fragment), V MN-major in shared memory
// (token rows, head dim contiguous: imm-trans-b 1).
__device__ __forceinline__ void wg_pv128(float* o, unsigned a0, unsigned a1, unsigned a2, unsigned a3,
                                         unsigned long long b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32." PAT_MMA_TYPE "." PAT_MMA_TYPE
        " {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
        "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,"
        "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,"
        "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, {%64,%65,%66,%67}, %68, p, 1, 1, 1;\n}\n"
        : "+f"(o[0]), "+f"(o[1]), "+f"(o[2]), "+f"(o[3]), "+f"(o[4]), "+f"(o[5]), "+f"(o[6]), "+f"(o[7]),
          "+f"(o[8]), "+f"(o[9]), "+f"(o[10]), "+f"(o[11]), "+f"(o[12]), "+f"(o[13]), "+f"(o[14]), "+f"(o[15]),
          "+f"(o[16]), "+f"(o[17]), "+f"(o[18]), "+f"(o[19]), "+f"(o[20]), "+f"(o[21]), "+f"(o[22]), "+f"(o[23]),
          "+f"(o[24]), "+f"(o[25]), "+f"(o[26]), "+f"(o[27]), "+f"(o[28]), "+f"(o[29]), "+f"(o[30]), "+f"(o[31]),
          "+f"(o[32]), "+f"(o[33]), "+f"(o[34]), "+f"(o[35]), "+f"(o[36]), "+f"(o[37]), "+f"(o[38]), "+f"(o[39]),
          "+f"(o[40]), "+f"(o[41]), "+f"(o[42]), "+f"(o[43]), "+f"(o[44]), "+f"(o[45]), "+f"(o[46]), "+f"(o[47]),
          "+f"(o[48]), "+f"(o[49]), "+f"(o[50]), "+f"(o[51]), "+f"(o[52]), "+f"(o[53]), "+f"(o[54]), "+f"(o[55]),
          "+f"(o[56]), "+f"(o[57]), "+f"(o[58]), "+f"(o[59]), "+f"(o[60]), "+f"(o[61]), "+f"(o[62]), "+f"(o[63])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(b), "r"(1));
}
// The same for 64 output columns (head dim 64).
__device__ __forceinline__ void wg_pv64(float* o, unsigned a0, unsigned a1, unsigned a2, unsigned a3,
                                        unsigned long long b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32." PAT_MMA_TYPE "." PAT_MMA_TYPE
        " {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
        "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, {%32,%33,%34,%35}, %36, p, 1, 1, 1;\n}\n"
        : "+f"(o[0]), "+f"(o[1]), "+f"(o[2]), "+f"(o[3]), "+f"(o[4]), "+f"(o[5]), "+f"(o[6]), "+f"(o[7]),
          "+f"(o[8]), "+f"(o[9]), "+f"(o[10]), "+f"(o[11]), "+f"(o[12]), "+f"(o[13]), "+f"(o[14]), "+f"(o[15]),
          "+f"(o[16]), "+f"(o[17]), "+f"(o[18]), "+f"(o[19]), "+f"(o[20]), "+f"(o[21]), "+f"(o[22]), "+f"(o[23]),
          "+f"(o[24]), "+f"(o[25]), "+f"(o[26]), "+f"(o[27]), "+f"(o[28]), "+f"(o[29]), "+f"(o[30]), "+f"(o[31])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(b), "r"(1));
}
#endif

// KV loading: each thread owns one token row of every tile (THREADS_PER_ROW threads share a row, each
// taking CHUNKS_PER_THREAD of its 16-byte chunks), so a tile needs one slot index per thread. That
// index is fetched a tile ahead into a register, keeping the dependent index load off the issue path.
// A row's threads interleave their chunks (thread j takes chunks j, j + THREADS_PER_ROW, ...), so that each
// cp.async instruction of a warp covers whole 32-byte sectors: THREADS_PER_ROW adjacent chunks of each of its rows.
// (Consecutive chunks per thread would split every sector between two instructions: two L2 requests per sector.)
constexpr int KV_CHUNKS_PER_ROW = HEAD_DIM * KV_ELEM_BYTES / 16;  // 16-byte chunks in one pool head row
constexpr int KV_CHUNK_ELEMS = 16 / KV_ELEM_BYTES;
constexpr int THREADS_PER_ROW = PAT_THREADS / KV_TILE;
constexpr int CHUNKS_PER_THREAD = KV_CHUNKS_PER_ROW / THREADS_PER_ROW;
static_assert(PAT_THREADS % KV_TILE == 0 && KV_CHUNKS_PER_ROW % THREADS_PER_ROW == 0, "KV tile does not fit the loader");

// Offset (elements) of a 16-byte chunk in a 16-bit [rows][HEAD_DIM] tile that the MMAs read: swz for mma.sync,
// swz128 for wgmma (WG).
template <bool WG>
__device__ __forceinline__ int mma_off(int rows, int row, int chunk) {
    return WG ? swz128(rows, row, chunk) : swz(row, chunk);
}

// Offset (kv_t elements) of a 16-byte chunk in a stage: the MMA layout for 16-bit pools; rows for FP8 stages, which
// the conversion reads a whole chunk per thread, and fp8_k_fragment and fp8_v_fragments four bytes per lane
// (PAT_FP8_KV_REGS: chunks XOR-swizzled by row).
// With PAT_WG_RING, 64-row items lay all STAGES stages out as one swz128 tile of STAGES * KV_TILE rows (stage s =
// rows s * KV_TILE ..): consecutive stages are then contiguous token rows of every 64-column block, so one wgmma
// descriptor spans WG_GROUP of them; stage s starts KV_TILE * 128 bytes after stage s - 1.
constexpr int WG_KV_ROWS = PAT_WG_RING ? STAGES * KV_TILE : KV_TILE;  // rows of a 64-column block of a WG KV tile
template <bool WG>
__device__ __forceinline__ int stage_off(int row, int chunk) {
#ifdef PAT_KV_FP8
    // with PAT_FP8_KV_REGS, chunk c of row r at c ^ (r & 7): the eight rows of an n8 block read by fp8_k_fragment's
    // lanes, at the same chunk, land in eight different bank groups; so do the two adjacent chunks (2 bg, 2 bg + 1) of
    // the four rows of one fp8_v_fragments load (rows 2t, 2t + 1, 2t + 8 or 2t + 9 of a 16-row block, t = 0 .. 3: their
    // r & 7 differ in bits 1 and 2, so the chunk pairs land on four different pairs of bank groups)
    return row * HEAD_DIM + (PAT_FP8_KV_REGS ? chunk ^ (row & 7) : chunk) * KV_CHUNK_ELEMS;
#else
    return WG ? swz128(WG_KV_ROWS, row, chunk) : swz(row, chunk);
#endif
}
template <bool WG>
__device__ constexpr unsigned stage_bytes() {  // bytes from one stage of K (or V) to the next
    return WG && PAT_WG_RING ? KV_TILE * 128 : KV_TILE * HEAD_DIM * KV_ELEM_BYTES;
}

// The slot of this thread's row in the tile starting at kv position tok0 (-1: past the end).
__device__ __forceinline__ int row_slot(const PatForwardParams& p, int tok0, int kv_end) {
    const int tok = tok0 + threadIdx.x / THREADS_PER_ROW;
    return tok < kv_end ? __ldg(p.slot_table + tok) : -1;
}

// This thread's part of every KV tile (its row's chunks), resolved once per CTA: the pools at this KV head and the
// thread's first chunk, the chunks' shared-window addresses in stage 0. Per tile the loader then adds the slot's
// offset (one 32 x 32 -> 64-bit multiply: the host keeps the slot stride under 2 GiB) and the stage's.
struct KvLoader {
    const char* k;
    const char* v;
    unsigned k_smem[CHUNKS_PER_THREAD];  // K stage 0; V's are V_STAGES_BYTES further
    int slot_bytes;
};
constexpr unsigned STAGE_BYTES = KV_TILE * HEAD_DIM * KV_ELEM_BYTES;
constexpr unsigned V_STAGES_BYTES = STAGES * STAGE_BYTES;  // sv - sk
static_assert(SMEM_KV_ELEMS * KV_ELEM_BYTES == V_STAGES_BYTES, "V's stages follow K's");
// Stages of an item on tile_group_loop: its TILE_M-row Q tile, then as many K and V stages as the main region holds
// past it, so a 16-row item takes the rows of the 64-row Q tile it leaves unused (and with FP8 pools, the converted
// tile it does not need) as a deeper KV pipeline (16-bit d64 and d128: 5 stages where 64-row items have 4; FP8 d128: 5
// where others have 2; FP8 d256: 6 where others have 3).
template <int TILE_M>
__device__ constexpr int tile_group_stages() {
    return (SMEM_MAIN_BYTES - TILE_M * HEAD_DIM * 2) / (2 * STAGE_BYTES);
}

template <bool WG>
__device__ __forceinline__ KvLoader kv_loader(const PatForwardParams& p, const kv_t* sk, int kvh) {
    const int row = threadIdx.x / THREADS_PER_ROW;
    const int chunk0 = threadIdx.x % THREADS_PER_ROW;
    const long long head = (long long)kvh * p.kv_stride_head + chunk0 * KV_CHUNK_ELEMS;
    KvLoader l;
    l.k = reinterpret_cast<const char*>(p.k + head);
    l.v = reinterpret_cast<const char*>(p.v + head);
#pragma unroll
    for (int i = 0; i < CHUNKS_PER_THREAD; ++i)
        l.k_smem[i] = smem_addr(sk + stage_off<WG>(row, chunk0 + i * THREADS_PER_ROW));
    l.slot_bytes = static_cast<int>(p.kv_stride_slot) * KV_ELEM_BYTES;
    return l;
}

// Gather this thread's chunks of its row of one KV tile into stage `stage`, K and V (zero-filled past the end, the
// address then the pool's first row, never read; CTA-wide loader: every thread of the CTA takes part).
template <bool WG, unsigned V_OFF = V_STAGES_BYTES>  // V_OFF: bytes from K's stages to V's (sv - sk)
__device__ __forceinline__ void load_kv_row(const KvLoader& l, int stage, int slot) {
    const bool valid = slot >= 0;
    const unsigned long long off = (unsigned long long)(unsigned)(valid ? slot : 0) * (unsigned)l.slot_bytes;
    const char* k = l.k + off;
    const char* v = l.v + off;
#pragma unroll
    for (int i = 0; i < CHUNKS_PER_THREAD; ++i) {
        const unsigned dst = l.k_smem[i] + stage * stage_bytes<WG>();
        cp_async_16_at(dst, k + i * THREADS_PER_ROW * 16, valid);
        cp_async_16_at(dst + V_OFF, v + i * THREADS_PER_ROW * 16, valid);
    }
}

#ifdef PAT_KV_FP8
// Two FP8 values (low byte first) -> two packed fp16 elements, exactly: FP8 values are fp16 values (one hardware cvt
// on sm_89+), and FP8 builds run fp16 MMAs whatever the query dtype.
__device__ __forceinline__ unsigned fp8x2_to_elem2(unsigned pair) {
    const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(pair & 0xffffu), PAT_KV_FP8);
    unsigned bits;  // the cvt's packed pair as it is (rebuilding it from h.x and h.y costs a PRMT per pair)
    memcpy(&bits, &h, sizeof bits);
    return bits;
}

// The upper two FP8 values of a word -> two fp16: fp8x2_to_elem2(w >> 16), where on sm_89+ the cvt reads the
// register's upper half itself (F2FP .H1: no shift; nvcc does not fold the shift into the cvt). Every FP8 pair taken
// from a word's upper half at d128 / d256 goes through it: the tile conversion, fp8_k_fragment, fp8_v_fragments.
__device__ __forceinline__ unsigned fp8x2_hi_to_elem2(unsigned w) {
#if PAT_FP8_HW_CVT
    unsigned bits;
    if constexpr (PAT_KV_FP8 == __NV_E5M2)
        asm("{.reg .b16 lo, hi;\n mov.b32 {lo, hi}, %1;\n cvt.rn.f16x2.e5m2x2 %0, hi;}\n" : "=r"(bits) : "r"(w));
    else
        asm("{.reg .b16 lo, hi;\n mov.b32 {lo, hi}, %1;\n cvt.rn.f16x2.e4m3x2 %0, hi;}\n" : "=r"(bits) : "r"(w));
    return bits;
#else
    return fp8x2_to_elem2(w >> 16);
#endif
}

// The tile conversion's upper pairs: fp8x2_hi_to_elem2 where PAT_FP8_KV_REGS (d128, d256); d64's builds (80
// registers at 6 CTAs per SM) spill 16-32 bytes with it on sm_90 and keep the shift.
__device__ __forceinline__ unsigned tile_hi_to_elem2(unsigned w) {
    return PAT_FP8_KV_REGS ? fp8x2_hi_to_elem2(w) : fp8x2_to_elem2(w >> 16);
}

// One 16-byte FP8 chunk (16 dims) -> its two 16-byte element chunks (dims 0-7, 8-15).
__device__ __forceinline__ void fp8_chunk_to_elems(const uint4 w, uint4& lo, uint4& hi) {
    lo = make_uint4(fp8x2_to_elem2(w.x), tile_hi_to_elem2(w.x), fp8x2_to_elem2(w.y), tile_hi_to_elem2(w.y));
    hi = make_uint4(fp8x2_to_elem2(w.z), tile_hi_to_elem2(w.z), fp8x2_to_elem2(w.w), tile_hi_to_elem2(w.w));
}

// Token rows [row0, row0 + ROWS) of one landed FP8 stage (K and V) -> the same rows of the 16-bit K and V tiles the
// MMAs read (in the MMA layout of a 16-bit stage), by THREADS threads (tid: this one's index among them). Each
// 16-byte FP8 chunk (16 dims) becomes two 16-byte element chunks. Rows past the end were zero-filled and convert to
// zeros. The whole tile by the CTA: convert_kv_rows<WG, KV_TILE, PAT_THREADS>(..., 0, threadIdx.x).
template <bool WG, int ROWS, int THREADS>
__device__ __forceinline__ void convert_kv_rows(const kv_t* sk8, const kv_t* sv8, elem_t* sk, elem_t* sv, int row0,
                                                int tid) {
    for (int i = tid; i < ROWS * KV_CHUNKS_PER_ROW; i += THREADS) {
        const int row = row0 + i / KV_CHUNKS_PER_ROW;
        const int chunk = i % KV_CHUNKS_PER_ROW;
        uint4 v_lo, v_hi, k_lo, k_hi;
        fp8_chunk_to_elems(*reinterpret_cast<const uint4*>(sv8 + stage_off<WG>(row, chunk)), v_lo, v_hi);
        fp8_chunk_to_elems(*reinterpret_cast<const uint4*>(sk8 + stage_off<WG>(row, chunk)), k_lo, k_hi);
        *reinterpret_cast<uint4*>(sk + mma_off<WG>(KV_TILE, row, 2 * chunk)) = k_lo;
        *reinterpret_cast<uint4*>(sk + mma_off<WG>(KV_TILE, row, 2 * chunk + 1)) = k_hi;
        *reinterpret_cast<uint4*>(sv + mma_off<WG>(KV_TILE, row, 2 * chunk)) = v_lo;
        *reinterpret_cast<uint4*>(sv + mma_off<WG>(KV_TILE, row, 2 * chunk + 1)) = v_hi;
    }
}

#if PAT_FP8_KV_REGS
// K's two B fragments of one n8 block of mma.m16n8k16 (16 dims x 8 tokens) straight from the FP8 stage: lane
// (g = lane / 4, t = lane % 4) holds B[k][n = g] for k = 2t, 2t + 1 (b0) and 2t + 8, 2t + 9 (b1). It loads the four
// bytes of dims 4t .. 4t + 3 of its token row in the step's 16-dim chunk and takes them as those four k: a permutation
// of the step's dims, which Q's A fragments follow (permute_q_rows), so each score is the same sum. `row` = the
// block's first token + g; the stage is swizzled by stage_off (chunk ^ (row & 7)).
__device__ __forceinline__ void fp8_k_fragment(const kv_t* k8, int row, int kk, int t, unsigned& b0, unsigned& b1) {
    const unsigned w = *reinterpret_cast<const unsigned*>(k8 + stage_off<false>(row, kk) + 4 * t);
    b0 = fp8x2_to_elem2(w);
    b1 = fp8x2_hi_to_elem2(w);
}

// V's B fragments of four n8 blocks of mma.m16n8k16 (k = the block's 16 tokens, n = 8 dims each) straight from the
// FP8 stage: lane (g = lane / 4, t = lane % 4) holds B[k][n = g] for k = 2t, 2t + 1 (b[j][0]) and 2t + 8, 2t + 9
// (b[j][1]): two tokens of one dim per register, which token rows give only from two rows. So the lane loads the four
// bytes at 32 bg + 4g (dims 32 bg + 4g .. + 3) of token rows 2t, 2t + 1, 2t + 8 and 2t + 9 (four 32-bit loads), pairs
// rows 2t / 2t + 1 and 2t + 8 / 2t + 9 byte by byte (prmt: one dim's two tokens side by side, two dims per word), and
// converts each pair (one cvt). Block j = 0 .. 3 takes dim 32 bg + 4g + j as its column g: its columns are the dims
// 32 bg + j + 4n (n = 0 .. 7), so its accumulator columns 2t, 2t + 1 hold dims 32 bg + 8t + j and 32 bg + 8t + 4 + j,
// and across the four blocks a lane holds eight adjacent dims 32 bg + 8t .. + 7 of each of its rows (o_pair). `row`
// = the block's first token + 2t (the first token a multiple of 16: rows 2t + 8, 2t + 9 have the swizzles of rows 2t,
// 2t + 1, eight rows further). As in lane_chunk_addr, chunk 2 bg + g / 4 of row r lands at chunk
// (2 bg) ^ (g / 4 ^ (r & 7)) (2 bg even: no carries), so group bg's addresses are group 0's XOR (bg << 5): the stage
// starts at a multiple of its HEAD_DIM-byte rows in the 1024-aligned buffer.
static_assert(SMEM_Q_ELEMS * 2 % HEAD_DIM == 0 && STAGE_BYTES % HEAD_DIM == 0, "FP8 stages at whole rows");
__device__ __forceinline__ void fp8_v_fragments(const kv_t* v8, int row, int bg, int g, unsigned (&b)[4][2]) {
    const unsigned a0 = smem_addr(v8 + stage_off<false>(row, g / 4) + 4 * (g % 4)) ^ (bg << 5);
    const unsigned a1 = smem_addr(v8 + stage_off<false>(row + 1, g / 4) + 4 * (g % 4)) ^ (bg << 5);
    const unsigned w0 = lds_b32(a0);
    const unsigned w1 = lds_b32(a1);
    const unsigned w8 = lds_b32(a0 + 8 * HEAD_DIM);
    const unsigned w9 = lds_b32(a1 + 8 * HEAD_DIM);
    const unsigned lo = __byte_perm(w0, w1, 0x5140);   // dims +0, +1: (token 2t, token 2t + 1) byte pairs
    const unsigned hi = __byte_perm(w0, w1, 0x7362);   // dims +2, +3
    const unsigned lo8 = __byte_perm(w8, w9, 0x5140);  // the same for tokens 2t + 8, 2t + 9
    const unsigned hi8 = __byte_perm(w8, w9, 0x7362);
    b[0][0] = fp8x2_to_elem2(lo);
    b[1][0] = fp8x2_hi_to_elem2(lo);
    b[2][0] = fp8x2_to_elem2(hi);
    b[3][0] = fp8x2_hi_to_elem2(hi);
    b[0][1] = fp8x2_to_elem2(lo8);
    b[1][1] = fp8x2_hi_to_elem2(lo8);
    b[2][1] = fp8x2_to_elem2(hi8);
    b[3][1] = fp8x2_hi_to_elem2(hi8);
}
#endif
#endif

// Two adjacent output elements of one (request, q head) row: to the output (dtype) when the request has no other
// partial (dst < 0), else to its partial slot (the dtype; its fp32 log2-sum-exp beside it). The V scale applies here,
// once per element.
__device__ __forceinline__ void write_pair(const PatForwardParams& p, int req, int dst, int head, int d, float v0,
                                           float v1) {
    v0 *= p.v_scale;
    v1 *= p.v_scale;
    if (dst < 0) {
        *reinterpret_cast<io2_t*>(p.out + (long long)req * p.out_stride + head * HEAD_DIM + d) =
            pat_float2_to_io2(v0, v1);
    } else {
        *reinterpret_cast<io2_t*>(p.part_o + ((long long)dst * p.num_q_heads + head) * HEAD_DIM + d) =
            pat_float2_to_io2(v0, v1);
    }
}

// A per-lane partial sum summed over the lanes that share its row: xor distances FIRST, 2 FIRST, .. LAST.
template <int FIRST, int LAST>
__device__ __forceinline__ float lane_sum(float x) {
#pragma unroll
    for (int off = FIRST; off <= LAST; off *= 2) x += __shfl_xor_sync(0xffffffff, x, off);
    return x;
}

// The fp32 combine slabs of a multi-group epilogue, over the shared memory the KV loop is done with:
// o [KV_GROUPS][TILE_M][HEAD_DIM], m [KV_GROUPS][TILE_M], l [KV_GROUPS][TILE_M].
struct Slabs {
    float* o;
    float* m;
    float* l;
    __device__ __forceinline__ void park(int i, float row_max, float row_sum) const {  // row i's max and sum
        m[i] = row_max;
        l[i] = row_sum;
    }
};
template <int KV_GROUPS, int TILE_M>
__device__ __forceinline__ Slabs slabs(elem_t* smem) {
    float* o = reinterpret_cast<float*>(smem);
    return Slabs{o, o + KV_GROUPS * TILE_M * HEAD_DIM, o + KV_GROUPS * TILE_M * HEAD_DIM + KV_GROUPS * TILE_M};
}

// Where query row r of an item goes: its request, that request's partial slot (dst < 0: the output) and its q head.
struct RowDest {
    int req;
    int dst;
    int head;
};
__device__ __forceinline__ RowDest row_dest(const PatForwardParams& p, int req_begin, int group, int kvh, int r) {
    const int ri = req_begin + r / group;
    return RowDest{p.item_req[ri], p.item_dst[ri], kvh * group + r % group};
}
// The log2-sum-exp of a row with a partial slot (to.dst >= 0: rows written to the output have none), beside its row.
__device__ __forceinline__ void write_lse(const PatForwardParams& p, const RowDest& to, float lse) {
    p.part_lse[(long long)to.dst * p.num_q_heads + to.head] = lse;
}

// One work item as the forward reads it: its KV positions [kv_begin, kv_end) in the slot table (an open end resolved
// from its request's current row and length), its first request (an index into item_req), its query rows (requests x
// q heads of the KV group) and the group size.
struct ItemView {
    int kv_begin;
    int kv_end;
    int req_begin;
    int n_rows;
    int group;
};

__device__ __forceinline__ ItemView read_item(const PatForwardParams& p, const int* item) {
    const int group = p.num_q_heads / p.num_kv_heads;
    const int req_begin = item[ITEM_REQ_BEGIN];
    int kv_end = item[ITEM_KV_END];
    if (kv_end == ITEM_OPEN_END) {  // the item's one request: its row's end now (< 2^31: the host checks the table)
        const int req = p.item_req[req_begin];
        kv_end = static_cast<int>(__ldg(p.req_rows + req) * p.row_stride + __ldg(p.seq_lens + req));
    }
    return ItemView{item[ITEM_KV_BEGIN], kv_end, req_begin, (item[ITEM_REQ_END] - req_begin) * group, group};
}

// Q rows of an item -> shared memory (zero rows past n_rows: they give finite scores and are never written).
template <int TILE_M, bool WG>
__device__ __forceinline__ void load_q_rows(const PatForwardParams& p, elem_t* sq, int req_begin, int n_rows, int group,
                                            int kvh) {
    for (int c = threadIdx.x; c < TILE_M * CHUNKS_PER_ROW; c += PAT_THREADS) {
        const int row = c / CHUNKS_PER_ROW;
        const int chunk = c % CHUNKS_PER_ROW;
        const bool valid = row < n_rows;
        long long off = 0;
        if (valid) {
            const int req = p.item_req[req_begin + row / group];
            const int head = kvh * group + row % group;
            off = (long long)req * p.q_stride + (long long)head * HEAD_DIM + chunk * 8;
        }
        cp_async_16(sq + mma_off<WG>(TILE_M, row, chunk), p.q + off, valid);
    }
}

#ifdef PAT_FP8_F16_MMA
// One packed bf16 pair of Q -> fp16 times 2^-PAT_Q_SHIFT_LOG2 (the element types above say why).
__device__ __forceinline__ unsigned q_pair_to_f16(unsigned pair) {
    constexpr float Q_SHIFT = 1.f / (1 << PAT_Q_SHIFT_LOG2);
    const float2 f = pat_io2_to_float2(*reinterpret_cast<const io2_t*>(&pair));
    const __half2 h = __floats2half2_rn(f.x * Q_SHIFT, f.y * Q_SHIFT);
    return *reinterpret_cast<const unsigned*>(&h);
}

// The item's landed bf16 Q rows -> fp16 in place (q_pair_to_f16), 16 bytes at a time over load_q_rows' chunks. Called
// past a CTA barrier that follows Q's landing, and before the one that precedes the first MMA.
template <int TILE_M, bool WG>
__device__ __forceinline__ void convert_q_rows(elem_t* sq) {
    for (int c = threadIdx.x; c < TILE_M * CHUNKS_PER_ROW; c += PAT_THREADS) {
        uint4* chunk = reinterpret_cast<uint4*>(sq + mma_off<WG>(TILE_M, c / CHUNKS_PER_ROW, c % CHUNKS_PER_ROW));
        const uint4 x = *chunk;
        *chunk = make_uint4(q_pair_to_f16(x.x), q_pair_to_f16(x.y), q_pair_to_f16(x.z), q_pair_to_f16(x.w));
    }
}
#endif

#if PAT_FP8_KV_REGS
// An item's TILE_M landed Q rows reordered for fp8_k_fragment: each k16 step's 16 dims (chunks 2s and 2s + 1, words
// w0 .. w7 of dim pairs) become chunk 2s = w0 w2 w4 w6 and chunk 2s + 1 = w1 w3 w5 w7, so that ldmatrix hands lane t
// the words w(2t) (a0, a1) and w(2t + 1) (a2, a3): dims 4t, 4t + 1 and 4t + 2, 4t + 3, the dims lane t's K fragment
// holds. Under bf16 queries the words become fp16 on the way (q_pair_to_f16, as convert_q_rows). Called past a CTA
// barrier that follows Q's landing, and before the one that precedes the first MMA.
template <int TILE_M>
__device__ __forceinline__ void permute_q_rows(elem_t* sq) {
    for (int c = threadIdx.x; c < TILE_M * CHUNKS_PER_ROW / 2; c += PAT_THREADS) {
        const int row = c / (CHUNKS_PER_ROW / 2);
        const int step = c % (CHUNKS_PER_ROW / 2);
        uint4* lo = reinterpret_cast<uint4*>(sq + mma_off<false>(TILE_M, row, 2 * step));
        uint4* hi = reinterpret_cast<uint4*>(sq + mma_off<false>(TILE_M, row, 2 * step + 1));
        uint4 x = *lo;
        uint4 y = *hi;
#ifdef PAT_FP8_F16_MMA
        x = make_uint4(q_pair_to_f16(x.x), q_pair_to_f16(x.y), q_pair_to_f16(x.z), q_pair_to_f16(x.w));
        y = make_uint4(q_pair_to_f16(y.x), q_pair_to_f16(y.y), q_pair_to_f16(y.z), q_pair_to_f16(y.w));
#endif
        *lo = make_uint4(x.x, x.z, y.x, y.z);
        *hi = make_uint4(x.y, x.w, y.y, y.w);
    }
}
#endif

// The scores' scale in log2 units: the host's, times the power of two that fp16 Q rows were scaled down by.
__device__ __forceinline__ float score_scale_log2(const PatForwardParams& p) {
#ifdef PAT_FP8_F16_MMA
    return p.scale_log2 * (1 << PAT_Q_SHIFT_LOG2);
#else
    return p.scale_log2;
#endif
}

// One warp's online-softmax state for its 16 query rows: each thread holds rows lane/4 and lane/4 + 8 (log2 units),
// O columns j*8 + (lane%4)*2 + {0,1} (with V from the FP8 stage, fp8_v_fragments' columns: o_pair); l is a
// per-thread partial sum until the end.
struct RowState {
    float o[HEAD_DIM / 8][4];
    float m[2];
    float l[2];
};

// Pair i (0 .. HEAD_DIM / 8 - 1) of this thread's O values of row half h (0: row lane/4, 1: lane/4 + 8): two adjacent
// dims d, d + 1 and their accumulators (v0, v1); d = o_pair(...) + o_lane_dim(lane). mma.sync's C layout: pair i is
// block i's c(2h), c(2h + 1), dims 8i + 2t, + 1 (t = lane % 4). V8 (O += P V on fp8_v_fragments' blocks): block j's
// accumulator columns 2t, 2t + 1 are dims 32 (j / 4) + 8t + j % 4 and that + 4, so the eight dims 32 bg + 8t .. + 7
// are c(2h) of blocks 4bg .. 4bg + 3, then c(2h + 1) of them: pair i takes blocks 4 (i / 4) + 2 (i % 2) and the next,
// at c(2h + (i / 2) % 2).
template <bool V8>
__device__ __forceinline__ int o_pair(const RowState& st, int i, int h, float& v0, float& v1) {
    if constexpr (V8) {
        const int j = 4 * (i / 4) + 2 * (i % 2);
        const int c = 2 * h + (i / 2) % 2;
        v0 = st.o[j][c];
        v1 = st.o[j + 1][c];
        return 32 * (i / 4) + 4 * ((i / 2) % 2) + 2 * (i % 2);
    } else {
        v0 = st.o[i][2 * h];
        v1 = st.o[i][2 * h + 1];
        return i * 8;
    }
}
template <bool V8>
__device__ __forceinline__ int o_lane_dim(int lane) {
    return (lane % 4) * (V8 ? 8 : 2);
}

__device__ __forceinline__ void init_rows(RowState& st) {
#pragma unroll
    for (int j = 0; j < HEAD_DIM / 8; ++j) st.o[j][0] = st.o[j][1] = st.o[j][2] = st.o[j][3] = 0.f;
    st.m[0] = st.m[1] = PAT_NEG_INF;
    st.l[0] = st.l[1] = 0.f;
}

// One row's running max (log2 units) against a block's scaled maximum `tile_max`: the new max (the running max moves
// only when the block's exceeds it by more than the slack PAT_RESCALE_SLACK_LOG2, so exps stay <= 2^slack), the O
// rescale factor in `rescale`, `grew` set where it moved. Returns the max to subtract inside the block's exps: 0 for
// a row with nothing seen yet (m = -inf), so that exp2 gives 0, not NaN.
__device__ __forceinline__ float running_max_step(float& m, float tile_max, float& rescale, bool& grew) {
#if PAT_RESCALE_SLACK_LOG2 > 0
    const float m_new = tile_max > m + PAT_RESCALE_SLACK_LOG2 ? tile_max : m;
#else
    const float m_new = fmaxf(m, tile_max);
#endif
    grew |= m_new != m;
    const float m_use = m_new == PAT_NEG_INF ? 0.f : m_new;
    rescale = fast_exp2(m - m_use);
    m = m_new;
    return m_use;
}

// The O accumulators (NB blocks of a warp's m16n8 accumulators) times the rows' rescale factors: accumulator e of a
// block belongs to row half e / 2 (the 16-row layout: c0, c1 row lane/4, c2, c3 row lane/4 + 8) or, with
// ROWS_BY_COLUMN (the t8 layout, rows as the MMA's N), to row e % 2. Where no row of the warp has a new max, every
// factor is exp2(0) = 1 (or 0 on a row still at -inf, whose O is 0): the multiply changes no bit and is skipped. After a
// row's first tiles its max rarely rises, so most tiles of a long item skip these multiplies (warp-uniform: no
// divergence).
template <bool ROWS_BY_COLUMN, int NB>
__device__ __forceinline__ void rescale_acc(float (&o)[NB][4], const float (&rescale)[2], bool grew) {
#if PAT_RESCALE_SLACK_LOG2 < 0
    grew = true;  // sweep baseline: rescale every tile
#endif
    if (__any_sync(0xffffffff, grew)) {
#pragma unroll
        for (int j = 0; j < NB; ++j) {
#pragma unroll
            for (int e = 0; e < 4; ++e) o[j][e] *= rescale[ROWS_BY_COLUMN ? e % 2 : e / 2];
        }
    }
}

// The score half of the online-softmax update of one block of NBS * 8 columns (16 on the mma.sync path; 16, 32 or
// 64 on the wgmma paths) for a warp's 16 query rows (s: the block's raw scores q.k in the m16n8 accumulator layout,
// NBS n8 blocks): masks columns past kv_end, moves the running max and sum, leaves P = 2^(scaled score - max) in s and
// the O accumulators' rescale factors in `rescale`; returns whether a row of this thread moved its max (rescale_o).
template <int NBS>
__device__ __forceinline__ bool softmax_block(const PatForwardParams& p, float (&s)[NBS][4], int tok_base, int kv_end,
                                              RowState& st, float (&rescale)[2]) {
    const int lane = threadIdx.x % 32;
    const float scale_log2 = score_scale_log2(p);
    // Online softmax (log2 domain). s holds raw scores q.k; columns past kv_end are masked, which only the block
    // holding kv_end needs (warp-uniform test). The scale (> 0, checked on the host) is applied to the block's max
    // (rounding is monotone: the same value as the max of scaled scores) and inside each exp as one FMA.
    if (tok_base + 8 * NBS > kv_end) {
#pragma unroll
        for (int j = 0; j < NBS; ++j) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int tok = tok_base + j * 8 + (lane % 4) * 2 + (e & 1);
                if (tok >= kv_end) s[j][e] = PAT_NEG_INF;
            }
        }
    }
    float tile_max[2] = {PAT_NEG_INF, PAT_NEG_INF};
#pragma unroll
    for (int j = 0; j < NBS; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) tile_max[e / 2] = fmaxf(tile_max[e / 2], s[j][e]);
    }
    bool grew = false;  // a row of this thread whose running max moved: its O columns need the rescale
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        tile_max[h] = fmaxf(tile_max[h], __shfl_xor_sync(0xffffffff, tile_max[h], 1));
        tile_max[h] = fmaxf(tile_max[h], __shfl_xor_sync(0xffffffff, tile_max[h], 2)) * scale_log2;
        const float m_use = running_max_step(st.m[h], tile_max[h], rescale[h], grew);
        float sum = 0.f;
#pragma unroll
        for (int j = 0; j < NBS; ++j) {  // a masked column: fma(-inf, scale, -m) = -inf, exp2 = 0
            s[j][2 * h] = fast_exp2(fmaf(s[j][2 * h], scale_log2, -m_use));
            s[j][2 * h + 1] = fast_exp2(fmaf(s[j][2 * h + 1], scale_log2, -m_use));
            sum += s[j][2 * h] + s[j][2 * h + 1];
        }
        st.l[h] = st.l[h] * rescale[h] + sum;  // per-thread partial sum, reduced at the end
    }
    return grew;
}

// The O half of the online-softmax update: the warp's O accumulators times the rescale factors softmax_block gave
// (split from it so that the wide kernel can run softmax_block while its previous P V is still in flight on O).
__device__ __forceinline__ void rescale_o(RowState& st, const float (&rescale)[2], bool grew) {
    rescale_acc<false>(st.o, rescale, grew);
}

// The online-softmax update of one block of NBS * 8 columns (16 on the mma.sync path; 16, 32 or 64 on the wgmma
// path) for a warp's 16 query rows: softmax_block, then rescale_o.
template <int NBS>
__device__ __forceinline__ void online_softmax(const PatForwardParams& p, float (&s)[NBS][4], int tok_base, int kv_end,
                                               RowState& st) {
    float rescale[2];
    const bool grew = softmax_block(p, s, tok_base, kv_end, st, rescale);
    rescale_o(st, rescale, grew);
}

// P of one k16 step (two n8 blocks of S from s[0], as online_softmax leaves them) as the k16 A fragment of
// O += P V: the same registers for mma.sync and for wgmma with A from registers.
__device__ __forceinline__ void p_fragment(const float (*s)[4], unsigned& a0, unsigned& a1, unsigned& a2,
                                           unsigned& a3) {
    a0 = pack_elem2(s[0][0], s[0][1]);
    a1 = pack_elem2(s[0][2], s[0][3]);
    a2 = pack_elem2(s[1][0], s[1][1]);
    a3 = pack_elem2(s[1][2], s[1][3]);
}

// One 16-column block of a 16-bit KV tile against the warp's 16 query rows (rows rw*16.. of sq): S = Q K^T on
// tensor cores, columns past kv_end masked, the online-softmax update, O += P V. c0: the block's first column in the
// tile (a multiple of 16); tok_base: its kv position. KV8 (PAT_FP8_KV_REGS): tk and tv are the FP8 stages themselves
// (kv_t), read by fp8_k_fragment and fp8_v_fragments; sq holds Q in permute_q_rows' order, and st.o takes O's dims in
// fp8_v_fragments' order (the write reads them through o_pair<true>).
template <bool KV8 = false>
__device__ __forceinline__ void attend_block(const PatForwardParams& p, const elem_t* sq, int rw, const void* tk,
                                             const void* tv, int c0, int tok_base, int kv_end, RowState& st) {
    static_assert(!KV8 || PAT_FP8_KV_REGS, "K and V from the stage only where the stage, Q and O have their layouts");
    constexpr int NBS = 2;            // n8 blocks of S in the 16 columns (one k16 step of P V)
    constexpr int DB = HEAD_DIM / 8;  // n8 blocks of O
    const int lane = threadIdx.x % 32;
    float s[NBS][4];
#pragma unroll
    for (int j = 0; j < NBS; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
    static_assert(NBS == 2, "one x4 ldmatrix of K covers the block's two n8 blocks");
    const int mat = lane / 8;  // the 8x8 matrix of an x4 ldmatrix whose row address this lane gives
    // S = Q K^T over HEAD_DIM in k16 steps: Q rows of the warp (matrices: rows 0-7 / 8-15 x chunk halves), K rows of
    // the block (matrices: chunk halves x rows 0-7 / 8-15).
    const unsigned q_addr = lane_chunk_addr(sq, rw * 16 + (mat % 2) * 8 + lane % 8, mat / 2);
#if PAT_FP8_KV_REGS
    if constexpr (KV8) {
        const kv_t* k8 = static_cast<const kv_t*>(tk);
#pragma unroll 2
        for (int kk = 0; kk < HEAD_DIM / 16; ++kk) {
            unsigned a0, a1, a2, a3, b0, b1, b2, b3;
            ldmatrix_x4(a0, a1, a2, a3, q_addr ^ (kk << 5));
            fp8_k_fragment(k8, c0 + lane / 4, kk, lane % 4, b0, b1);      // tokens c0 .. c0 + 7
            fp8_k_fragment(k8, c0 + 8 + lane / 4, kk, lane % 4, b2, b3);  // tokens c0 + 8 .. c0 + 15
            mma_16816(s[0], a0, a1, a2, a3, b0, b1);
            mma_16816(s[1], a0, a1, a2, a3, b2, b3);
        }
    } else
#endif
    {
        const unsigned k_addr = lane_chunk_addr(static_cast<const elem_t*>(tk), c0 + (mat / 2) * 8 + lane % 8, mat % 2);
#pragma unroll 2  // partial: fully unrolled, the compiler hoists every K fragment into registers
        for (int kk = 0; kk < HEAD_DIM / 16; ++kk) {
            unsigned a0, a1, a2, a3, b0, b1, b2, b3;
            ldmatrix_x4(a0, a1, a2, a3, q_addr ^ (kk << 5));
            ldmatrix_x4(b0, b1, b2, b3, k_addr ^ (kk << 5));
            mma_16816(s[0], a0, a1, a2, a3, b0, b1);
            mma_16816(s[1], a0, a1, a2, a3, b2, b3);
        }
    }
    online_softmax(p, s, tok_base, kv_end, st);
    // O += P V: P from the S accumulators (two n8 blocks = one k16 A fragment), V transposed.
    unsigned a0, a1, a2, a3;
    p_fragment(s, a0, a1, a2, a3);
#if PAT_FP8_KV_REGS
    if constexpr (KV8) {  // 32 dims (four n8 blocks of O) per fp8_v_fragments
#pragma unroll
        for (int bg = 0; bg < HEAD_DIM / 32; ++bg) {
            unsigned b[4][2];
            fp8_v_fragments(static_cast<const kv_t*>(tv), c0 + 2 * (lane % 4), bg, lane / 4, b);
#pragma unroll
            for (int j = 0; j < 4; ++j) mma_16816(st.o[4 * bg + j], a0, a1, a2, a3, b[j][0], b[j][1]);
        }
        return;
    }
#endif
    const unsigned v_addr = lane_chunk_addr(static_cast<const elem_t*>(tv), c0 + (mat % 2) * 8 + lane % 8, mat / 2);
#pragma unroll
    for (int j = 0; j < DB; j += 2) {  // V's chunks j, j + 1: step j / 2
        unsigned b0, b1, b2, b3;
        ldmatrix_x4_trans(b0, b1, b2, b3, v_addr ^ (j << 4));
        mma_16816(st.o[j], a0, a1, a2, a3, b0, b1);
        mma_16816(st.o[j + 1], a0, a1, a2, a3, b2, b3);
    }
}

#ifdef PAT_WGMMA
// attend_block for a 64-row item on warpgroup MMAs (the CTA's four warps, warp w owning rows 16w..16w+15, each with
// the same register state as on the mma.sync path), over NC = PAT_WG_COLS KV columns at once (16, 32 or 64: a KV
// tile's columns in KV_TILE / NC blocks). q_desc: Q's descriptor (64 x HEAD_DIM, swz128); tk, tv: the KV tile
// (KV_TILE x HEAD_DIM, swz128; with PAT_WG_RING the ring of all stages, tk / tv at the block's first stage).
// S = Q K^T is HEAD_DIM / 16 chained m64nNCk16 MMAs: k16 step kk reads bytes
// (kk % 4) * 32 of column block kk / 4 of both tiles (K-major, 8-row groups 1024 B apart). One online-softmax step
// for the NC columns. O += P V is NC / 16 chained k16 steps of one m64nNk16 MMA per 128 output columns (64 for
// HEAD_DIM 64), P from registers, V MN-major: 64-column blocks KV_TILE * 128 B apart (the leading offset), 8-token
// groups 1024 B apart (the stride offset), k16 step j at +16 token rows. Wider blocks mean fewer round trips to the
// tensor cores (each commit + wait) and fewer row-max reductions per token, at NC / 2 S registers per thread.
// S[64 x NC] = Q K^T over HEAD_DIM as HEAD_DIM / 16 chained m64nNCk16 MMAs, issued (not committed): k16 step kk reads
// bytes (kk % 4) * 32 of column block kk / 4 of both tiles (K-major, 8-row groups 1024 B apart; a 64-column block of
// the Q tile is Q_BLOCK_BYTES, one of the KV tile KV_BLOCK_BYTES).
template <int NC, unsigned Q_BLOCK_BYTES, unsigned KV_BLOCK_BYTES>
__device__ __forceinline__ void wg_issue_s(float* sf, unsigned long long q_desc, unsigned long long k_desc) {
#pragma unroll
    for (int kk = 0; kk < HEAD_DIM / 16; ++kk) {
        const unsigned step = (kk & 3) * 32;
        const unsigned q_off = (kk >> 2) * Q_BLOCK_BYTES + step;
        const unsigned k_off = (kk >> 2) * KV_BLOCK_BYTES + step;
        wg_s<NC>(sf, q_desc + (q_off >> 4), k_desc + (k_off >> 4), kk > 0);
    }
}
// O += P V over NC KV columns, issued (not committed): NC / 16 chained k16 steps of one m64nNk16 MMA per 128 output
// columns (64 for HEAD_DIM 64), P from registers (a: one A fragment per k16 step), V MN-major by v_desc (64-column
// blocks KV_BLOCK_BYTES apart: the leading offset; 8-token groups 1024 B apart: the stride offset), k16 step j at +16
// token rows.
template <int NC, unsigned KV_BLOCK_BYTES>
__device__ __forceinline__ void wg_issue_pv(float* of, const unsigned (*a)[4], unsigned long long v_desc) {
#pragma unroll
    for (int j = 0; j < NC / 16; ++j) {
        const unsigned long long vj = v_desc + ((j * 16 * 128) >> 4);  // token rows 16 j ..
        if constexpr (HEAD_DIM == 64) {
            wg_pv64(of, a[j][0], a[j][1], a[j][2], a[j][3], vj);
        } else {
#pragma unroll
            for (int h = 0; h < HEAD_DIM / 128; ++h)  // 128 output columns = two 64-column blocks of V
                wg_pv128(of + 64 * h, a[j][0], a[j][1], a[j][2], a[j][3], vj + ((2 * h * KV_BLOCK_BYTES) >> 4));
        }
    }
}

// attend_block for a 64-row item on warpgroup MMAs (the CTA's four warps, warp w owning rows 16w..16w+15, each with
// the same register state as on the mma.sync path), over NC = PAT_WG_COLS KV columns at once (16, 32 or 64: a KV
// tile's columns in KV_TILE / NC blocks). q_desc: Q's descriptor (64 x HEAD_DIM, swz128); tk, tv: the KV tile
// (KV_TILE x HEAD_DIM, swz128; with PAT_WG_RING the ring of all stages, tk / tv at the block's first stage).
// S (wg_issue_s), one online-softmax step for the NC columns, O += P V (wg_issue_pv), each waited for. Wider blocks
// mean fewer round trips to the tensor cores (each commit + wait) and fewer row-max reductions per token, at NC / 2 S
// registers per thread.
template <int NC>
__device__ __forceinline__ void attend_block_wg(const PatForwardParams& p, unsigned long long q_desc, const elem_t* tk,
                                                const elem_t* tv, int c0, int tok_base, int kv_end, RowState& st) {
    constexpr unsigned KV_BLOCK_BYTES = WG_KV_ROWS * 128;  // one 64-column block of a KV tile (of the ring)
    constexpr int NBS = NC / 8;                            // n8 blocks of S
    float s[NBS][4];
    float* sf = &s[0][0];
    float* of = &st.o[0][0];
    wg_pin<HEAD_DIM / 2>(of);
    wg_fence();
    wg_issue_s<NC, 64 * 128, KV_BLOCK_BYTES>(sf, q_desc, wg_desc(smem_addr(tk) + c0 * 128, 16, 1024));
    wg_commit();
    wg_wait_all();
    wg_pin<NC / 2>(sf);
    online_softmax(p, s, tok_base, kv_end, st);
    unsigned a[NC / 16][4];
#pragma unroll
    for (int j = 0; j < NC / 16; ++j) p_fragment(&s[2 * j], a[j][0], a[j][1], a[j][2], a[j][3]);
    wg_pin<HEAD_DIM / 2>(of);
    wg_fence();
    wg_issue_pv<NC, KV_BLOCK_BYTES>(of, a, wg_desc(smem_addr(tv) + c0 * 128, KV_BLOCK_BYTES, 1024));
    wg_commit();
    wg_wait_all();
    wg_pin<HEAD_DIM / 2>(of);
}
#endif

// The end of an item: the warps' row states -> outputs or partial slots. KV_GROUPS = 1 (one warp saw every column
// of its rows): each computing warp writes its rows straight from registers. Otherwise each column group parks its
// raw state in its own fp32 slab, reusing the Q/K/V region (the caller has passed a CTA barrier after its last
// read of it), and the block combines the slabs row by row. No atomics. V8: O's accumulators hold fp8_v_fragments'
// dims (attend_block<true>), which o_pair puts back in place.
//   slab_o [KV_GROUPS][TILE_M][HEAD_DIM], slab_m [KV_GROUPS][TILE_M], slab_l [KV_GROUPS][TILE_M]
template <int KV_GROUPS, int TILE_M>
__device__ __forceinline__ void combine_slabs(const PatForwardParams& p, elem_t* smem, int req_begin, int n_rows,
                                              int group, int kvh);
template <int KV_GROUPS, int TILE_M, bool V8 = false>
__device__ __forceinline__ void write_rows(const PatForwardParams& p, elem_t* smem, const RowState& st, bool computes,
                                           int rw, int kw, int req_begin, int n_rows, int group, int kvh) {
    constexpr int DB = HEAD_DIM / 8;
    static_assert(KV_GROUPS * TILE_M <= MAX_TILE_M, "the combine slabs hold at most MAX_TILE_M rows");
    const int lane = threadIdx.x % 32;
    const int r_lo = rw * 16 + lane / 4;
    const float l_full[2] = {lane_sum<1, 2>(st.l[0]), lane_sum<1, 2>(st.l[1])};  // a row's four lanes
    if constexpr (KV_GROUPS == 1) {
        if (computes) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int r = r_lo + 8 * h;
                if (r >= n_rows) continue;
                const RowDest to = row_dest(p, req_begin, group, kvh, r);
                const float inv_l = 1.f / l_full[h];
#pragma unroll
                for (int j = 0; j < DB; ++j) {
                    float v0, v1;
                    const int d = o_pair<V8>(st, j, h, v0, v1) + o_lane_dim<V8>(lane);
                    write_pair(p, to.req, to.dst, to.head, d, v0 * inv_l, v1 * inv_l);
                }
                if (to.dst >= 0 && lane % 4 == 0) write_lse(p, to, st.m[h] + log2f(l_full[h]));
            }
        }
        return;
    }
    const Slabs slab = slabs<KV_GROUPS, TILE_M>(smem);
    if (computes) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int r = r_lo + 8 * h;
            float* row = slab.o + (kw * TILE_M + r) * HEAD_DIM;
#pragma unroll
            for (int j = 0; j < DB; ++j) {
                float v0, v1;
                const int d = o_pair<V8>(st, j, h, v0, v1);
                *reinterpret_cast<float2*>(row + d + o_lane_dim<V8>(lane)) = make_float2(v0, v1);
            }
            if (lane % 4 == 0) slab.park(kw * TILE_M + r, st.m[h], l_full[h]);
        }
    }
    combine_slabs<KV_GROUPS, TILE_M>(p, smem, req_begin, n_rows, group, kvh);
}

// The second half of a multi-group epilogue (write_rows, write_rows_t8): past a CTA barrier, the block combines the
// KV_GROUPS parked row states in the fp32 slabs (slab_o [KV_GROUPS][TILE_M][HEAD_DIM], slab_m, slab_l) row by row and
// writes each row to the output or its partial slot. A group that saw no column of a row (m = -inf) weighs 0.
template <int KV_GROUPS, int TILE_M>
__device__ __forceinline__ void combine_slabs(const PatForwardParams& p, elem_t* smem, int req_begin, int n_rows,
                                              int group, int kvh) {
    const Slabs slab = slabs<KV_GROUPS, TILE_M>(smem);
    const float* slab_o = slab.o;
    const float* slab_m = slab.m;
    const float* slab_l = slab.l;
    __syncthreads();
    for (int i = threadIdx.x; i < n_rows * (HEAD_DIM / 2); i += PAT_THREADS) {
        const int r = i / (HEAD_DIM / 2);
        const int d = (i % (HEAD_DIM / 2)) * 2;
        float mx = PAT_NEG_INF;
#pragma unroll
        for (int g = 0; g < KV_GROUPS; ++g) mx = fmaxf(mx, slab_m[g * TILE_M + r]);
        float den = 0.f, v0 = 0.f, v1 = 0.f;
#pragma unroll
        for (int g = 0; g < KV_GROUPS; ++g) {
            const float m = slab_m[g * TILE_M + r];
            const float w = m == PAT_NEG_INF ? 0.f : exp2f(m - mx);  // a group that saw no column adds 0
            const float2 x = *reinterpret_cast<const float2*>(slab_o + (g * TILE_M + r) * HEAD_DIM + d);
            den += w * slab_l[g * TILE_M + r];
            v0 += w * x.x;
            v1 += w * x.y;
        }
        const RowDest to = row_dest(p, req_begin, group, kvh, r);
        write_pair(p, to.req, to.dst, to.head, d, v0 / den, v1 / den);
        if (to.dst >= 0 && d == 0) write_lse(p, to, mx + log2f(den));
    }
}

#ifdef PAT_T8
// -DPAT_T8 (`KernelVariant.t8`, from the tile table's fp8 t8_head_dims or a sweep): long 16-row items of at most 8
// query rows on FP8 pools (a private leaf at GQA <= 8; one row at MHA) take the KV tokens as the MMA's M and their
// query rows as N = 8, on mma.sync m16n8k16: per 16-token block S^T = K Q^T (8 MMAs over HEAD_DIM, 16 on the 16-row
// layout) and O^T += V^T P^T (HEAD_DIM / 16 MMAs, HEAD_DIM / 8 there), O^T in half the registers, a quarter of the
// exp2 at one row. The operands come from today's loaders: K's A fragment is two fp8_k_fragment loads (token rows
// g and g + 8), V^T's is fp8_v_fragments' pairs, Q^T's B fragments are ldmatrix rows of permute_q_rows' Q; P^T's B
// fragments come from S^T's accumulators by four shuffles. The maps were checked lane by lane in float64 before this
// was written (docs/perf/kernels/2026-12-02-t8-design/). Lane (g = lane / 4, t = lane % 4) holds query rows 2t and
// 2t + 1 (index h = 0, 1): S^T's c[h] (token g) and c[2 + h] (token g + 8); O^T block b = 2 bg + hh: c[h] at dim
// 32 bg + 4g + 2hh, c[2 + h] at that dim + 1.
#if !defined(PAT_KV_FP8) || !PAT_FP8_KV_REGS
#error "PAT_T8 needs FP8 pools at a head dim of whole 128-byte FP8 rows (128, 256)"
#endif
constexpr int T8_ROWS = 8;  // query rows of an item on this layout (the MMA's N)
struct RowStateT8 {
    float o[HEAD_DIM / 16][4];
    float m[2];
    float l[2];  // per-lane partial sums over its tokens, reduced over g at the end
};

__device__ __forceinline__ void init_rows_t8(RowStateT8& st) {
#pragma unroll
    for (int j = 0; j < HEAD_DIM / 16; ++j) st.o[j][0] = st.o[j][1] = st.o[j][2] = st.o[j][3] = 0.f;
    st.m[0] = st.m[1] = PAT_NEG_INF;
    st.l[0] = st.l[1] = 0.f;
}

// One 16-token block (tokens c0 .. c0 + 15 of the FP8 stages k8 / v8; tok_base: c0's kv position) against the item's
// <= 8 query rows (rows 0-7 of sq, permute_q_rows' order; rows past the item's are zero): S^T, the online softmax,
// O^T += V^T P^T.
__device__ __forceinline__ void attend_block_t8(const PatForwardParams& p, const elem_t* sq, const kv_t* k8,
                                                const kv_t* v8, int c0, int tok_base, int kv_end, RowStateT8& st) {
    const int lane = threadIdx.x % 32;
    const int g = lane / 4;
    const int t = lane % 4;
    float s[4] = {0.f, 0.f, 0.f, 0.f};
    // Q^T's B fragments: ldmatrix matrix i = Q rows 0-7 x chunk 4 kp + i, so lane (g, t) gets row g's words t of chunks
    // 2k and 2k + 1 (dims 4t .. 4t + 3 of k16 step k, as fp8_k_fragment takes K's) for k = 2 kp and 2 kp + 1.
    const unsigned q_addr = lane_chunk_addr(sq, lane % 8, lane / 8);
#pragma unroll 2
    for (int kp = 0; kp < HEAD_DIM / 32; ++kp) {
        unsigned q0, q1, q2, q3;
        ldmatrix_x4(q0, q1, q2, q3, q_addr ^ (kp << 6));
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            unsigned k_lo0, k_lo1, k_hi0, k_hi1;  // token rows g (lo) and g + 8 (hi): dims 4t, 4t + 1 | 4t + 2, 4t + 3
            fp8_k_fragment(k8, c0 + g, 2 * kp + half, t, k_lo0, k_lo1);
            fp8_k_fragment(k8, c0 + 8 + g, 2 * kp + half, t, k_hi0, k_hi1);
            mma_16816(s, k_lo0, k_hi0, k_lo1, k_hi1, half ? q2 : q0, half ? q3 : q1);
        }
    }
    const float scale_log2 = score_scale_log2(p);
    if (tok_base + 16 > kv_end) {  // the block holding kv_end: tokens g and g + 8 past it are masked
        if (tok_base + g >= kv_end) s[0] = s[1] = PAT_NEG_INF;
        if (tok_base + g + 8 >= kv_end) s[2] = s[3] = PAT_NEG_INF;
    }
    bool grew = false;
    float rescale[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {  // query row 2t + h: its 16 scores over the eight lanes of this t
        float mx = fmaxf(s[h], s[2 + h]);
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 4));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 8));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 16)) * scale_log2;
        const float m_use = running_max_step(st.m[h], mx, rescale[h], grew);
        s[h] = fast_exp2(fmaf(s[h], scale_log2, -m_use));
        s[2 + h] = fast_exp2(fmaf(s[2 + h], scale_log2, -m_use));
        st.l[h] = st.l[h] * rescale[h] + s[h] + s[2 + h];
    }
    rescale_acc<true>(st.o, rescale, grew);
    // P^T's B fragment: lane (g, t) needs row g's tokens 2t, 2t + 1 (b0) and 2t + 8, 2t + 9 (b1); token j of row g is
    // element g % 2 (j < 8) or 2 + g % 2 of lane 4 (j % 8) + g / 2. Each lane packs its two rows per token, four
    // shuffles fetch the tokens' pairs, and the half of row g is kept.
    const unsigned p_lo = pack_elem2(s[0], s[1]);  // token g, rows 2t, 2t + 1
    const unsigned p_hi = pack_elem2(s[2], s[3]);  // token g + 8
    const int src = 8 * t + g / 2;                 // token 2t's lane (token 2t + 1: src + 4)
    const unsigned x0 = __shfl_sync(0xffffffff, p_lo, src);
    const unsigned x1 = __shfl_sync(0xffffffff, p_lo, src + 4);
    const unsigned y0 = __shfl_sync(0xffffffff, p_hi, src);
    const unsigned y1 = __shfl_sync(0xffffffff, p_hi, src + 4);
    const unsigned sel = g % 2 ? 0x7632 : 0x5410;
    const unsigned pb0 = __byte_perm(x0, x1, sel);
    const unsigned pb1 = __byte_perm(y0, y1, sel);
    // O^T += V^T P^T: block (bg, hh) rows g / g + 8 = dims 32 bg + 4g + 2hh / + 1, from fp8_v_fragments' b[2hh] and
    // b[2hh + 1] (tokens 2t, 2t + 1 | 2t + 8, 2t + 9)
#pragma unroll
    for (int bg = 0; bg < HEAD_DIM / 32; ++bg) {
        unsigned b[4][2];
        fp8_v_fragments(v8, c0 + 2 * t, bg, g, b);
        mma_16816(st.o[2 * bg], b[0][0], b[1][0], b[0][1], b[1][1], pb0, pb1);
        mma_16816(st.o[2 * bg + 1], b[2][0], b[3][0], b[2][1], b[3][1], pb0, pb1);
    }
}

// write_rows for RowStateT8 states of KV_GROUPS warps (warp kw's columns), parked in the combine slabs and combined
// (combine_slabs), or, with one group, written from registers.
template <int KV_GROUPS, int TILE_M>
__device__ __forceinline__ void write_rows_t8(const PatForwardParams& p, elem_t* smem, const RowStateT8& st,
                                              bool computes, int kw, int req_begin, int n_rows, int group, int kvh) {
    static_assert(KV_GROUPS * TILE_M <= MAX_TILE_M && T8_ROWS <= TILE_M, "the combine slabs hold the groups' rows");
    const int lane = threadIdx.x % 32;
    const int g = lane / 4;
    const int t = lane % 4;
    const float l_full[2] = {lane_sum<4, 16>(st.l[0]), lane_sum<4, 16>(st.l[1])};  // a row's eight lanes
    if constexpr (KV_GROUPS == 1) {
        if (computes) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int r = 2 * t + h;
                if (r >= n_rows) continue;
                const RowDest to = row_dest(p, req_begin, group, kvh, r);
                const float inv_l = 1.f / l_full[h];
#pragma unroll
                for (int j = 0; j < HEAD_DIM / 16; ++j)
                    write_pair(p, to.req, to.dst, to.head, 32 * (j / 2) + 4 * g + 2 * (j % 2), st.o[j][h] * inv_l,
                               st.o[j][2 + h] * inv_l);
                if (to.dst >= 0 && g == 0) write_lse(p, to, st.m[h] + log2f(l_full[h]));
            }
        }
        return;
    }
    const Slabs slab = slabs<KV_GROUPS, TILE_M>(smem);
    if (computes) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int r = 2 * t + h;
            float* row = slab.o + (kw * TILE_M + r) * HEAD_DIM;
#pragma unroll
            for (int j = 0; j < HEAD_DIM / 16; ++j)
                *reinterpret_cast<float2*>(row + 32 * (j / 2) + 4 * g + 2 * (j % 2)) =
                    make_float2(st.o[j][h], st.o[j][2 + h]);
            if (g == 0) slab.park(kw * TILE_M + r, st.m[h], l_full[h]);
        }
    }
    combine_slabs<KV_GROUPS, TILE_M>(p, smem, req_begin, n_rows, group, kvh);
}
#endif

// The KV pipeline of the loops that take G tiles per CTA barrier through NS stages (wg_ring_loop, tile_group_loop):
// the prologue issues the first NS - G tiles; iteration t (a multiple of G) waits until tiles t .. t + G - 1 have
// landed (the newest NS - 2G may still be pending), passes one CTA barrier (the previous group's G stages are then
// free), issues the G tiles NS - G ahead into them, and calls compute(t); with LATE, compute(t) first and the G
// tiles after it (each thread's cp.async gathers queue in the load unit, and the next instruction that reuses their
// address registers waits until they are taken: issued after the group's MMAs, that wait falls where the warp waits
// anyway, at the next barrier). Every tile is one commit group (empty past n_load), so "tile t + G - 1 has landed" is
// wait_group<NS - 2G> either way. Slot indices are fetched one group ahead, one per tile. start() runs once the
// prologue is issued: the caller zeroes its row state there, not across the prologue (at 80 registers, d64, zeroing
// first spilled). WG: the stages are the 64-row items' swz128 ring, read by wgmma
// (each thread fences its landed copies to the async proxy before the barrier). Returns with no copy in flight and
// every warp past the loop: the caller's epilogue may reuse the shared memory.
// Groups ahead that group_pipeline fetches its slot indices: FP8 builds two (their loop is short per byte, and with one
// the warps stalled on the slot a gather's address needed: ncu, FP8 MHA private rows, ~12% of the stall samples; with
// two and LATE gathers on every FP8 tile-group item, H200 FP8 private rows 0.85-0.95x:
// docs/perf/kernels/2026-12-03-h200-t8/; tree c at 32/8 loses 5% with the second group, Mooncake rows gain 2-6%:
// docs/perf/kernels/2026-12-03-h200-fp8-lookahead/), 16-bit builds one (two: the same time, and d64 spills).
// PAT_WG_SLOT_AHEAD_GROUPS sets 64-row items' apart (the sweep's knob; one group there: 0.99-1.00x, MHA mooncake96
// 0.96x in one run).
#ifndef PAT_SLOT_AHEAD_GROUPS
#ifdef PAT_KV_FP8
#define PAT_SLOT_AHEAD_GROUPS 2
#else
#define PAT_SLOT_AHEAD_GROUPS 1
#endif
#endif
#ifndef PAT_WG_SLOT_AHEAD_GROUPS  // 64-row items (wg_ring_loop)
#define PAT_WG_SLOT_AHEAD_GROUPS PAT_SLOT_AHEAD_GROUPS
#endif
template <int G, int NS, bool WG, unsigned V_OFF, bool LATE, int SA, typename Start, typename Compute>
__device__ __forceinline__ void group_pipeline(const PatForwardParams& p, const KvLoader& loader, int kv_begin,
                                               int kv_end, int n_tiles, int n_load, Start start,
                                               Compute compute) {
    constexpr int AHEAD = NS - G;  // tiles issued before the group computed on
    static_assert(AHEAD >= G, "G tiles computed while at least G are in flight");
#pragma unroll
    for (int t = 0; t < AHEAD; ++t) {
        if (t < n_load) load_kv_row<WG, V_OFF>(loader, t, row_slot(p, kv_begin + t * KV_TILE, kv_end));
        cp_async_commit();
    }
    int next_slot[SA][G];  // next_slot[s][i]: tile AHEAD + s * G + i past the group being issued
#pragma unroll
    for (int s = 0; s < SA; ++s)
#pragma unroll
        for (int i = 0; i < G; ++i) next_slot[s][i] = row_slot(p, kv_begin + (AHEAD + s * G + i) * KV_TILE, kv_end);
    start();
    for (int t = 0; t < n_tiles; t += G) {
        cp_async_wait<NS - 2 * G>();
#ifdef PAT_WGMMA
        if constexpr (WG) fence_proxy_async();  // this thread's landed copies (Q with tile 0), then wgmma reads them
#endif
        __syncthreads();
        if (t == 0) pat_stamp(1);
        const auto issue = [&] {
#pragma unroll
            for (int i = 0; i < G; ++i) {
                const int ahead = t + AHEAD + i;
                if (ahead < n_load) load_kv_row<WG, V_OFF>(loader, ahead % NS, next_slot[0][i]);
                cp_async_commit();
#pragma unroll
                for (int s = 0; s + 1 < SA; ++s) next_slot[s][i] = next_slot[s + 1][i];
                next_slot[SA - 1][i] = row_slot(p, kv_begin + (ahead + SA * G) * KV_TILE, kv_end);
            }
        };
        if constexpr (!LATE) issue();
        compute(t);
        if constexpr (LATE) issue();
    }
    cp_async_wait<0>();  // no copy may land in shared memory after the loop: the epilogue reuses it
    __syncthreads();     // ... nor may a warp still read its last tiles there
    pat_stamp(2);
}

#if defined(PAT_WGMMA) && PAT_WG_RING
// A 64-row item's loop with G = WG_GROUP tiles per S block (PAT_WG_RING): iteration t computes on tiles t .. t + G - 1
// (contiguous in the ring: G divides STAGES) while STAGES - 2G .. STAGES - G later tiles are in flight.
__device__ __forceinline__ void wg_ring_loop(const PatForwardParams& p, const KvLoader& loader, const elem_t* sq,
                                             const kv_t* sk, const kv_t* sv, int kv_begin, int kv_end, int n_tiles,
                                             int req_begin, int n_rows, int group, int kvh, elem_t* smem) {
    constexpr int G = WG_GROUP;
    constexpr int STAGE_ELEMS = KV_TILE * 64;  // stage_bytes<true>() in elements
    // The last group's tiles past the item's end are loaded too, as zeros (their slots are -1: nothing is read): the
    // P V MMAs read every row of the group, and a 0 weight times a stale row could be NaN.
    const int n_load = (n_tiles + G - 1) / G * G;
    RowState st;
    const unsigned long long q_desc = wg_desc(smem_addr(sq), 16, 1024);
    group_pipeline<G, STAGES, true, V_STAGES_BYTES, false, PAT_WG_SLOT_AHEAD_GROUPS>(
        p, loader, kv_begin, kv_end, n_tiles, n_load, [&] { init_rows(st); },
        [&](int t) {
            const int stage = t % STAGES;
            attend_block_wg<PAT_WG_COLS>(p, q_desc, sk + stage * STAGE_ELEMS, sv + stage * STAGE_ELEMS, 0,
                                         kv_begin + t * KV_TILE, kv_end, st);
        });
    write_rows<1, 64>(p, smem, st, true, threadIdx.x / 32, 0, req_begin, n_rows, group, kvh);
}
#endif

// 16-row items of at least GROUP_MIN_TOKENS tokens on mma.sync whose KV blocks a warp reads as they landed: 16-token
// tiles of 16-bit pools, or FP8 tiles read from the stage (KV8: PAT_FP8_KV_REGS, 32-token tiles of two 16-column
// blocks). G = GROUP_TILES tiles per CTA barrier (group_pipeline), each tile's KW = KV_TILE / 16 column blocks on KW
// warps: warp g * KW + c computes block c of tile t + g, so G * KW warps stream in parallel where KW computed while
// the others only loaded (the CTAs of private suffixes: one computing warp of four set their rate; H200, 16-bit d128:
// long private rows 0.97-0.98x, trees with 256-512-token suffixes 0.92-0.95x; 32-row items and shorter items lost up
// to 3% with it: docs/perf/kernels/2026-11-30-h200-tile-groups/). The item streams through NS =
// tile_group_stages<TILE_M>() stages laid out after its own Q rows. The G * KW warps' states are combined at the end
// as the KV_WARPS split's are (write_rows); a warp whose tile is past the end keeps its empty state, which the combine
// weighs 0.
constexpr int GROUP_TILES = 2;          // tiles per barrier
constexpr int GROUP_MIN_TOKENS = 256;   // shorter items keep the one-tile loop (their combine would cost more than it
                                        // saves)
// FP8 items on this loop (all of at least GROUP_MIN_TOKENS tokens) issue each group's gathers after its MMAs
// (group_pipeline's LATE): their warps convert, compute and gather, and stalled on the gathers' address registers (ncu,
// FP8 d256 private rows: about a third of the stall samples). H200 FP8 private rows: d256 0.91-0.94x, d128 0.93-1.00x,
// when only items of 1024 tokens or more took it (shorter ones lost the lookahead instead: d128 tree b, 512-token
// items, 1.05x), and 16-bit items, which only load while others compute, lost 1-7%:
// docs/perf/kernels/2026-12-01-h200-fp8-late-loads/. With the slot indices two groups ahead (PAT_SLOT_AHEAD_GROUPS)
// every FP8 item here gains from it, and the order is a compile-time one (a run-time threshold of 1024 tokens kept
// both orders in the loop and ran FP8 private rows 1.03-1.14x slower than this: docs/perf/kernels/2026-12-03-h200-t8/).
template <int ROW_WARPS, int G, int NS, bool KV8>
__device__ __forceinline__ void tile_group_loop(const PatForwardParams& p, int kv_begin, int kv_end, int n_tiles,
                                                int req_begin, int n_rows, int group, int kvh, elem_t* smem) {
    constexpr int TILE_M = ROW_WARPS * 16;
    constexpr int KW = KV_TILE / 16;  // 16-column blocks per tile, one warp each
    constexpr int STAGE_ELEMS = KV_TILE * HEAD_DIM;
    static_assert(KV8 || KV_TILE == 16, "16-bit tiles: one 16-column block per tile and warp");
    static_assert(ROW_WARPS * G * KW <= PAT_WARPS, "a warp per block of each group's tiles");
    elem_t* sq = smem;  // TILE_M rows, then NS K stages, then NS V stages
    const kv_t* sk = reinterpret_cast<const kv_t*>(smem + TILE_M * HEAD_DIM);
    const kv_t* sv = sk + NS * STAGE_ELEMS;
    const KvLoader loader = kv_loader<false>(p, sk, kvh);
    const int warp = threadIdx.x / 32;
    const bool computes = warp < ROW_WARPS * G * KW;
    const int rw = warp / (G * KW);  // row group
    const int kg = warp % (G * KW);  // this warp's block of each group: tile t + kg / KW, columns 16 (kg % KW) ..
    const int c0 = kg % KW * 16;
#ifdef PAT_T8
    if constexpr (KV8 && ROW_WARPS == 1) {
        if (n_rows <= T8_ROWS) {  // tokens as the MMA's M (PAT_T8 above): the same pipeline, another block and state
            RowStateT8 st8;
            group_pipeline<G, NS, false, NS * STAGE_BYTES, true, PAT_SLOT_AHEAD_GROUPS>(
                p, loader, kv_begin, kv_end, n_tiles, n_tiles,
                [&] {
                    cp_async_wait<NS - G - 1>();
                    __syncthreads();
                    permute_q_rows<TILE_M>(sq);
                    init_rows_t8(st8);
                },
                [&](int t) {
                    const int tile = t + kg / KW;
                    if (computes && tile < n_tiles) {
                        const int stage = tile % NS;
                        attend_block_t8(p, sq, sk + stage * STAGE_ELEMS, sv + stage * STAGE_ELEMS, c0,
                                        kv_begin + tile * KV_TILE + c0, kv_end, st8);
                    }
                });
            write_rows_t8<G * KW, TILE_M>(p, smem, st8, computes, kg, req_begin, n_rows, group, kvh);
            return;
        }
    }
#endif
    RowState st;
    group_pipeline<G, NS, false, NS * STAGE_BYTES, KV8, PAT_SLOT_AHEAD_GROUPS>(
        p, loader, kv_begin, kv_end, n_tiles, n_tiles,
        [&] {
#if PAT_FP8_KV_REGS
            if constexpr (KV8) {  // Q (landed with tile 0) in fp8_k_fragment's dim order, before any warp reads it
                cp_async_wait<NS - G - 1>();
                __syncthreads();
                permute_q_rows<TILE_M>(sq);
            }
#endif
            init_rows(st);
        },
        [&](int t) {
            const int tile = t + kg / KW;
            if (computes && tile < n_tiles) {
                const int stage = tile % NS;
                attend_block<KV8>(p, sq, rw, sk + stage * STAGE_ELEMS, sv + stage * STAGE_ELEMS, c0,
                                  kv_begin + tile * KV_TILE + c0, kv_end, st);
            }
        });
    write_rows<G * KW, TILE_M, KV8>(p, smem, st, computes, rw, kg, req_begin, n_rows, group, kvh);
}

// The CTA-wide loop: all threads load each KV tile, ROW_WARPS x KV_WARPS warps compute on it, one CTA barrier per
// tile.
template <int ROW_WARPS>
__device__ __forceinline__ void pack_forward_tile(const PatForwardParams& p, const int* item, int kvh, elem_t* smem) {
    constexpr int KV_WARPS = (PAT_WARPS / ROW_WARPS) < (KV_TILE / 16) ? (PAT_WARPS / ROW_WARPS) : (KV_TILE / 16);
    constexpr int COLS = KV_TILE / KV_WARPS;  // KV columns per warp per tile, a multiple of 16
    constexpr int TILE_M = ROW_WARPS * 16;
    // 64-row items on warpgroup MMAs where the build has them: the four computing warps are one warpgroup.
#ifdef PAT_WGMMA
    constexpr bool WG = ROW_WARPS == 4 && PAT_WARPS == 4;
#else
    constexpr bool WG = false;
#endif
    // Long 16-row items on tile_group_loop (mma.sync, blocks read as they landed, a warp per block of each group's
    // tiles, stages for G computed while at least G are in flight).
    constexpr int GROUP_STAGES = tile_group_stages<TILE_M>();
#ifdef PAT_KV_FP8
    // Items on mma.sync where PAT_FP8_KV_REGS (16 and 32 rows in wgmma builds, every tile m otherwise; 16 rows only
    // without the hardware conversion, PAT_FP8_HW_CVT): K's and V's operands come from the FP8 stage itself
    // (fp8_k_fragment, fp8_v_fragments), so nothing is converted and the loop keeps one CTA barrier per tile (per
    // group of tiles on tile_group_loop). Other items (wgmma's 64 rows, whose B operands must be 16-bit tiles in shared
    // memory, or d64) convert the tile CTA-wide behind a second barrier, one tile at a time into one 16-bit tile.
    // (d64's 16-row items converting their own rows per warp instead ran 1.02-1.04x slower than CTA-wide on the H200;
    // 32-row items from the stage: trees 0.98-1.00x CTA-wide conversion's time, H200 2026-12-01:
    // docs/perf/kernels/2026-12-01-h200-fp8-tile-groups/.)
    constexpr bool KV_FROM_STAGE = !WG && PAT_FP8_KV_REGS && (ROW_WARPS == 1 || PAT_FP8_HW_CVT);
    constexpr bool TILE_GROUPS = KV_FROM_STAGE && ROW_WARPS == 1 && PAT_WARPS >= GROUP_TILES * (KV_TILE / 16) &&
                                 GROUP_STAGES >= 2 * GROUP_TILES;  // (one row warp: the combine's slabs hold 64 rows)
#else
    constexpr bool KV_FROM_STAGE = false;
    // (Not beside d64's ring loop: at 6 CTAs per SM, 80 registers, the build with both spills.)
    constexpr bool TILE_GROUPS = !WG && ROW_WARPS == 1 && KV_TILE == 16 && PAT_WARPS >= GROUP_TILES &&
                                 GROUP_STAGES >= 2 * GROUP_TILES && !(PAT_WG_RING && HEAD_DIM == 64);
#endif

    const auto [kv_begin, kv_end, req_begin, n_rows, group] = read_item(p, item);

    elem_t* sq = smem;
    kv_t* sk = reinterpret_cast<kv_t*>(smem + SMEM_Q_ELEMS);
    kv_t* sv = sk + SMEM_KV_ELEMS;
#ifdef PAT_KV_FP8
    elem_t* sk_cvt = reinterpret_cast<elem_t*>(sv + SMEM_KV_ELEMS);
    elem_t* sv_cvt = sk_cvt + SMEM_CVT_ELEMS;
#endif

    load_q_rows<TILE_M, WG>(p, sq, req_begin, n_rows, group, kvh);
    if constexpr (TILE_GROUPS) {
        const int n_group_tiles = (kv_end - kv_begin + KV_TILE - 1) / KV_TILE;
        if (n_group_tiles * KV_TILE >= GROUP_MIN_TOKENS) {
            tile_group_loop<ROW_WARPS, GROUP_TILES, GROUP_STAGES, KV_FROM_STAGE>(p, kv_begin, kv_end, n_group_tiles,
                                                                                 req_begin, n_rows, group, kvh, smem);
            return;
        }
    }
    // Prologue: the first STAGES-1 tiles go out at once (group 0 also carries Q). Every iteration commits
    // exactly one group (possibly empty) after its wait, so at iteration t's wait tiles 0..t+STAGES-2 are committed
    // and "tile t has landed" is wait_group<STAGES-2>.
    static_assert(STAGES >= 2, "one tile in flight while one is computed on");
    const int n_tiles = (kv_end - kv_begin + KV_TILE - 1) / KV_TILE;
    constexpr int STAGE_ELEMS = KV_TILE * HEAD_DIM;
    const KvLoader loader = kv_loader<WG>(p, sk, kvh);
#if defined(PAT_WGMMA) && PAT_WG_RING
    if constexpr (WG) {
        wg_ring_loop(p, loader, sq, sk, sv, kv_begin, kv_end, n_tiles, req_begin, n_rows, group, kvh, smem);
        return;
    }
#endif
#pragma unroll
    for (int t = 0; t < STAGES - 1; ++t) {
        if (t < n_tiles) load_kv_row<WG>(loader, t, row_slot(p, kv_begin + t * KV_TILE, kv_end));
        cp_async_commit();
    }
    int next_slot = row_slot(p, kv_begin + (STAGES - 1) * KV_TILE, kv_end);
#ifdef PAT_FP8_F16_MMA
    // Q (copied with tile 0) to fp16 before the loop, not inside it: in the loop its registers spill the tightest
    // builds. The loop's first barriers (and fence, for wgmma) order these writes before the first MMA.
    cp_async_wait<STAGES - 2>();
    __syncthreads();
    if constexpr (!KV_FROM_STAGE) convert_q_rows<TILE_M, WG>(sq);
#endif
#if PAT_FP8_KV_REGS
    if constexpr (KV_FROM_STAGE) {  // Q in fp8_k_fragment's dim order (and fp16), ordered as convert_q_rows is
#ifndef PAT_FP8_F16_MMA
        cp_async_wait<STAGES - 2>();
        __syncthreads();
#endif
        permute_q_rows<TILE_M>(sq);
    }
#endif

    const int warp = threadIdx.x / 32;
    const bool computes = warp < ROW_WARPS * KV_WARPS;
    const int rw = warp / KV_WARPS;  // row group
    const int kw = warp % KV_WARPS;  // column group

    RowState st;
    init_rows(st);

    // One CTA barrier per tile: past it, tile t has landed for every thread and every warp has finished computing
    // on tile t-1, so its stage (the one tile t+STAGES-1 goes to) can be refilled and, with FP8 KV, the converted
    // tile rewritten.
#ifdef PAT_WGMMA
    const unsigned long long q_desc = wg_desc(smem_addr(sq), 16, 1024);
#endif
    for (int t = 0; t < n_tiles; ++t) {
        cp_async_wait<STAGES - 2>();
#ifdef PAT_WGMMA
        if constexpr (WG) fence_proxy_async();  // this thread's landed copies (Q with tile 0), then wgmma reads them
#endif
        __syncthreads();
        if (t == 0) pat_stamp(1);
        const int ahead = t + STAGES - 1;
        if (ahead < n_tiles) {
            load_kv_row<WG>(loader, ahead % STAGES, next_slot);
            next_slot = row_slot(p, kv_begin + (ahead + 1) * KV_TILE, kv_end);
        }
        cp_async_commit();
#ifdef PAT_KV_FP8
        // Tiles read from the stage need nothing more: the barrier above put the tile's landing (every thread's
        // copies) and the end of every warp's work on the last tile behind all of them.
        if constexpr (!KV_FROM_STAGE) {
            convert_kv_rows<WG, KV_TILE, PAT_THREADS>(sk + (t % STAGES) * STAGE_ELEMS,
                                                      sv + (t % STAGES) * STAGE_ELEMS, sk_cvt, sv_cvt, 0, threadIdx.x);
#ifdef PAT_WGMMA
            if constexpr (WG) fence_proxy_async();
#endif
            __syncthreads();
        }
        const void* tk = KV_FROM_STAGE ? static_cast<const void*>(sk + (t % STAGES) * STAGE_ELEMS) : sk_cvt;
        const void* tv = KV_FROM_STAGE ? static_cast<const void*>(sv + (t % STAGES) * STAGE_ELEMS) : sv_cvt;
#else
        const elem_t* tk = sk + (t % STAGES) * STAGE_ELEMS;
        const elem_t* tv = sv + (t % STAGES) * STAGE_ELEMS;
#endif
#ifdef PAT_WGMMA
        if constexpr (WG && !PAT_WG_RING) {  // every warp computes
#pragma unroll 2
            for (int c0 = 0; c0 < KV_TILE; c0 += PAT_WG_COLS)
                attend_block_wg<PAT_WG_COLS>(p, q_desc, static_cast<const elem_t*>(tk),
                                             static_cast<const elem_t*>(tv), c0,
                                             kv_begin + t * KV_TILE + c0, kv_end, st);
            continue;
        }
#endif
        if (computes) {
            // The warp's COLS columns go 16 at a time so S stays small in registers.
#pragma unroll 2
            for (int c0 = kw * COLS; c0 < (kw + 1) * COLS; c0 += 16)
                attend_block<KV_FROM_STAGE>(p, sq, rw, tk, tv, c0, kv_begin + t * KV_TILE + c0, kv_end, st);
        }
    }
    cp_async_wait<0>();  // no copy may land in shared memory after the loop: the combine reuses it
    __syncthreads();     // ... nor may a warp still read its last tile there
    pat_stamp(2);
    write_rows<KV_WARPS, TILE_M, KV_FROM_STAGE>(p, smem, st, computes, rw, kw, req_begin, n_rows, group, kvh);
}

extern "C" __global__ void __launch_bounds__(PAT_THREADS, PAT_MIN_BLOCKS) pat_pack_forward(const PatForwardParams p) {
    // 1024-aligned: lane_chunk_addr XORs step offsets into addresses of tiles at multiples of ROW_BYTES
    extern __shared__ __align__(1024) unsigned char pat_smem_raw[];
    elem_t* smem = reinterpret_cast<elem_t*>(pat_smem_raw);
    // blockIdx.x = KV head, so the CTAs of one item's heads are scheduled together and read the adjacent
    // head rows of each token (one DRAM page, shared L2 sectors) at about the same time.
    const int item_idx = blockIdx.y;
    if (p.num_items != nullptr && item_idx >= *p.num_items) return;
    const int* item = p.items + item_idx * ITEM_FIELDS;
    const int kvh = blockIdx.x;
    pat_stamp(0);
    switch (item[ITEM_TILE_M]) {
        case 16: pack_forward_tile<1>(p, item, kvh, smem); break;
#if PAT_WARPS >= 2
        case 32: pack_forward_tile<2>(p, item, kvh, smem); break;
#endif
#if PAT_WARPS >= 4
        case 64: pack_forward_tile<4>(p, item, kvh, smem); break;
#endif
#if PAT_WARPS >= 8
        case 128: pack_forward_tile<8>(p, item, kvh, smem); break;
#endif
        default: __trap();  // the host never plans a tile m this build lacks (checked at launch): fail loudly
    }
    pat_stamp(3);
}

#ifdef PAT_WIDE
// pat_wide_forward (-DPAT_WIDE=STAGES, sm_90a, 16-bit pools): the wide items (tile m >= 64: the packs of many query
// rows that a shared prefix makes) in a launch of their own, in FlashAttention-3's shape. One CTA per (wide item, KV
// head), 384 threads: a producer warpgroup and two consumer warpgroups of 64 query rows each (a 128-row item; a 64-row
// item leaves the second idle), one CTA per SM.
//   Producer (warps 0-3): gathers the item's Q rows (both halves) and then its KV in blocks of WIDE_N = 64 tokens into
//   a ring of STAGES stages (swz128, [64 tokens][HEAD_DIM] K and V per stage), two threads per token row, slot indices
//   read WIDE_SLOTS_AHEAD blocks ahead. Stage hand-off by mbarriers instead of CTA barriers: full[s] (128 producer arrivals, each made
//   by the hardware when the thread's copies of the block have landed: cp.async.mbarrier.arrive.noinc; the consumers
//   fence them to the async proxy after their wait) and empty[s] (one arrival per consumer warp once its MMAs have
//   read the block), so the producer runs up to STAGES blocks ahead of the consumers.
//   Consumers (warps 4-11): per block, S = Q K^T (m64n64, 8 k16 steps) is issued together with the previous block's
//   O += P V, so the P V MMAs run under this block's softmax (softmax_block); O is rescaled (rescale_o) once that P V
//   has completed. Each consumer warpgroup streams the whole item on its own: two such chains per SM interleave, and
//   both read every KV block from the same stage (half the L2 -> shared-memory traffic of two 64-row items).
//   Measured (H200, docs/perf/kernels/2026-12-01-h200-wide-launch/): correct, but no faster per SM than the 64-row items
//   of pat_pack_forward, so the tile table never selects it (a sweep build, bench/tile_sweep.py /wsN).
// The other items run on pat_pack_forward, launched after this kernel with its items pointer past the wide ones; their
// partials merge as one (pat_merge).
#if !defined(PAT_WGMMA) || defined(PAT_KV_FP8) || HEAD_DIM > 128 || PAT_THREADS != 128
#error "PAT_WIDE needs a 4-warp wgmma build over 16-bit pools at head dim 64 or 128"
#endif
constexpr int WIDE_N = 64;                 // KV tokens per stage and per S block
constexpr int WIDE_STAGES = PAT_WIDE;
static_assert(WIDE_STAGES >= 2, "one block in flight while one is computed on");
constexpr int WIDE_THREADS = 384;
constexpr int WIDE_ROWS = 128;             // query rows of the two consumer warpgroups
constexpr int WIDE_Q_ELEMS = WIDE_ROWS * HEAD_DIM;
constexpr int WIDE_STAGE_ELEMS = WIDE_N * HEAD_DIM;  // K (or V) of one stage
constexpr int WIDE_SMEM_BYTES = WIDE_Q_ELEMS * 2 + 2 * WIDE_STAGES * WIDE_STAGE_ELEMS * 2 + 2 * WIDE_STAGES * 8;
extern "C" __device__ const int pat_wide_smem_bytes = WIDE_SMEM_BYTES;  // the host checks its copy at load
constexpr unsigned WIDE_Q_BLOCK_BYTES = WIDE_ROWS * 128;  // one 64-column block of the Q tile
constexpr unsigned WIDE_KV_BLOCK_BYTES = WIDE_N * 128;    // one 64-column block of a KV stage
constexpr int WIDE_CHUNKS_PER_THREAD = CHUNKS_PER_ROW / 2;  // two producer threads per token row
constexpr int WIDE_SLOTS_AHEAD = 4;  // blocks whose slot indices a producer thread holds (wide_producer)

__device__ __forceinline__ void mbar_init(unsigned addr, unsigned count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(addr), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(unsigned addr) {  // release: this thread's earlier writes come with it
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(addr) : "memory");
}
// One arrival on the mbarrier once all of this thread's earlier cp.asyncs have landed (the pending count not raised
// first: the arrival is one of the count the barrier was made with).
__device__ __forceinline__ void mbar_arrive_on_copies(unsigned addr) {
    asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(addr) : "memory");
}
__device__ __forceinline__ void mbar_wait(unsigned addr, unsigned parity) {  // until phase `parity` has completed
    asm volatile(
        "{\n.reg .pred done;\nWAIT:\n"
        "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
        "@!done bra WAIT;\n}\n" ::"r"(addr), "r"(parity) : "memory");
}

// -DPAT_TIMING: cycles of the wide kernel's block loops by phase, per CTA (producer: empty wait, issue; consumer, first
// thread: full wait, S, softmax, P V wait), accumulated in `prof` (declared by WIDE_PROF_DECL) and kept in pat_timing.
#ifdef PAT_TIMING
#define WIDE_PROF_DECL                       \
    unsigned long long prof[4] = {0, 0, 0, 0}; \
    long long c0 = 0
#define WIDE_PROF_MARK(c) c = clock64()
#define WIDE_PROF_ADD(i, c)             \
    {                                   \
        const long long c1 = clock64(); \
        prof[i] += c1 - c;              \
        c = c1;                         \
    }
#else
#define WIDE_PROF_DECL
#define WIDE_PROF_MARK(c)
#define WIDE_PROF_ADD(i, c)
#endif

__device__ __forceinline__ void wide_producer(const PatForwardParams& p, const ItemView& it, int n_tiles, elem_t* sq,
                                              elem_t* sk, unsigned full0, unsigned empty0, int kvh) {
    const int tid = threadIdx.x;  // 0..127
    WIDE_PROF_DECL;
    load_q_rows<WIDE_ROWS, true>(p, sq, it.req_begin, it.n_rows, it.group, kvh);  // both halves, in block 0's group
    const int row = tid / 2;   // this thread's token row of every block
    const int half = tid % 2;  // its chunks: half, half + 2, ... (a warp instruction covers whole 32-byte sectors)
    const long long head = (long long)kvh * p.kv_stride_head + half * 8;
    const char* kb = reinterpret_cast<const char*>(p.k + head);
    const char* vb = reinterpret_cast<const char*>(p.v + head);
    const unsigned slot_bytes = static_cast<unsigned>(p.kv_stride_slot) * 2;
    unsigned dst[WIDE_CHUNKS_PER_THREAD];
#pragma unroll
    for (int i = 0; i < WIDE_CHUNKS_PER_THREAD; ++i) dst[i] = smem_addr(sk + swz128(WIDE_N, row, half + 2 * i));
    constexpr unsigned V_OFF = WIDE_STAGES * WIDE_STAGE_ELEMS * 2;  // bytes from K's stages to V's
    const auto slot_of = [&](int t) {
        const int tok = it.kv_begin + t * WIDE_N + row;
        return t < n_tiles && tok < it.kv_end ? __ldg(p.slot_table + tok) : -1;
    };
    // Slot indices WIDE_SLOTS_AHEAD blocks ahead, in registers (the loop unrolled by that count keeps their indices
    // static): each index load has that many blocks' time to land before its gathers need it, where one block ahead
    // left the producer waiting on every load (the consumers then waited ~500 cycles a block on full barriers).
    int slots[WIDE_SLOTS_AHEAD];
#pragma unroll
    for (int j = 0; j < WIDE_SLOTS_AHEAD; ++j) slots[j] = slot_of(j);
    for (int t0 = 0; t0 < n_tiles; t0 += WIDE_SLOTS_AHEAD) {
#pragma unroll
        for (int j = 0; j < WIDE_SLOTS_AHEAD; ++j) {
            const int t = t0 + j;
            if (t >= n_tiles) break;
            const int stage = t % WIDE_STAGES;
            WIDE_PROF_MARK(c0);
            if (t >= WIDE_STAGES) mbar_wait(empty0 + 8 * stage, ((t / WIDE_STAGES) - 1) & 1);
            WIDE_PROF_ADD(0, c0);
            const int slot = slots[j];
            slots[j] = slot_of(t + WIDE_SLOTS_AHEAD);
            const bool valid = slot >= 0;  // rows past the end: zero-filled, nothing read
            const unsigned long long off = (unsigned long long)(unsigned)(valid ? slot : 0) * slot_bytes;
#pragma unroll
            for (int i = 0; i < WIDE_CHUNKS_PER_THREAD; ++i) {
                const unsigned d = dst[i] + stage * WIDE_STAGE_ELEMS * 2;
                cp_async_16_at(d, kb + off + i * 32, valid);
                cp_async_16_at(d + V_OFF, vb + off + i * 32, valid);
            }
            mbar_arrive_on_copies(full0 + 8 * stage);
            WIDE_PROF_ADD(1, c0);
        }
    }
#ifdef PAT_TIMING
    if (threadIdx.x == 0) {
        const int cta = blockIdx.y * gridDim.x + blockIdx.x;
        for (int i = 0; i < 2; ++i) pat_timing[PAT_TIMING_SLOTS / 8 + cta][i] = prof[i];
    }
#endif
    cp_async_wait<0>();  // no copy of this thread in flight when it leaves
}

__device__ __forceinline__ void wide_consumer(const PatForwardParams& p, const ItemView& it, int n_tiles, int wg,
                                              const elem_t* sq, const elem_t* sk, const elem_t* sv, unsigned full0,
                                              unsigned empty0, int kvh) {
    constexpr int NBS = WIDE_N / 8;  // n8 blocks of S
    const int warp = (threadIdx.x / 32) % 4;
    const bool arrives = threadIdx.x % 32 == 0;
    RowState st;
    init_rows(st);
    float s[NBS][4];
    unsigned a[WIDE_N / 16][4];
    float rescale[2];
    WIDE_PROF_DECL;
    float* sf = &s[0][0];
    float* of = &st.o[0][0];
    unsigned* af = &a[0][0];
    const unsigned long long q_desc = wg_desc(smem_addr(sq) + wg * 64 * 128, 16, 1024);
    const unsigned k0 = smem_addr(sk);
    const unsigned v0 = smem_addr(sv);
    const auto issue_s = [&](int stage) {
        wg_issue_s<WIDE_N, WIDE_Q_BLOCK_BYTES, WIDE_KV_BLOCK_BYTES>(
            sf, q_desc, wg_desc(k0 + stage * WIDE_STAGE_ELEMS * 2, 16, 1024));
    };
    const auto issue_pv = [&](int stage) {
        wg_issue_pv<WIDE_N, WIDE_KV_BLOCK_BYTES>(
            of, a, wg_desc(v0 + stage * WIDE_STAGE_ELEMS * 2, WIDE_KV_BLOCK_BYTES, 1024));
    };
    const auto p_fragments = [&] {
#pragma unroll
        for (int j = 0; j < WIDE_N / 16; ++j) p_fragment(&s[2 * j], a[j][0], a[j][1], a[j][2], a[j][3]);
    };
    mbar_wait(full0, 0);
    fence_proxy_async();  // the block's (and Q's) copies, landed in the generic proxy, then read by wgmma
    pat_stamp(1, PAT_TIMING_WIDE_BASE, threadIdx.x == 128);  // the first consumer thread: first block landed
    wg_fence();
    issue_s(0);
    wg_commit();
    wg_wait<0>();
    wg_pin<WIDE_N / 2>(sf);
    softmax_block(p, s, it.kv_begin, it.kv_end, st, rescale);  // O is still 0: nothing to rescale
    p_fragments();
    for (int t = 1; t < n_tiles; ++t) {
        const int stage = t % WIDE_STAGES;
        const int prev = (t - 1) % WIDE_STAGES;
        WIDE_PROF_MARK(c0);
        mbar_wait(full0 + 8 * stage, (t / WIDE_STAGES) & 1);
        fence_proxy_async();
        WIDE_PROF_ADD(0, c0);
        wg_pin<HEAD_DIM / 2>(of);
        wg_pin_u<WIDE_N / 4>(af);
        wg_fence();
        issue_s(stage);
        wg_commit();
        issue_pv(prev);
        wg_commit();
        wg_wait<1>();  // S of block t; block t - 1's P V may still run
        wg_pin<WIDE_N / 2>(sf);
        WIDE_PROF_ADD(1, c0);
        const bool grew = softmax_block(p, s, it.kv_begin + t * WIDE_N, it.kv_end, st, rescale);
        WIDE_PROF_ADD(2, c0);
        wg_wait<0>();
        wg_pin<HEAD_DIM / 2>(of);
        wg_pin_u<WIDE_N / 4>(af);
        WIDE_PROF_ADD(3, c0);
        if (arrives) mbar_arrive(empty0 + 8 * prev);  // block t - 1 read: K by last iteration's S, V by this P V
        rescale_o(st, rescale, grew);
        p_fragments();
    }
    wg_pin<HEAD_DIM / 2>(of);
    wg_fence();
    issue_pv((n_tiles - 1) % WIDE_STAGES);
    wg_commit();
    wg_wait<0>();
    wg_pin<HEAD_DIM / 2>(of);
    pat_stamp(2, PAT_TIMING_WIDE_BASE, threadIdx.x == 128);
#ifdef PAT_TIMING
    if (threadIdx.x == 128) {
        const int cta = blockIdx.y * gridDim.x + blockIdx.x;
        for (int i = 0; i < 4; ++i) pat_timing[PAT_TIMING_SLOTS / 4 + cta][i] = prof[i];
    }
#endif
    write_rows<1, 64>(p, nullptr, st, true, 4 * wg + warp, 0, it.req_begin, it.n_rows, it.group, kvh);
}

extern "C" __global__ void __launch_bounds__(WIDE_THREADS, 1) pat_wide_forward(const PatForwardParams p) {
    extern __shared__ __align__(1024) unsigned char pat_smem_raw[];
    const int* item = p.items + blockIdx.y * ITEM_FIELDS;  // the wide items lead the item list: grid y = their count
    const int kvh = blockIdx.x;
    pat_stamp(0, PAT_TIMING_WIDE_BASE);
    const ItemView it = read_item(p, item);
    elem_t* sq = reinterpret_cast<elem_t*>(pat_smem_raw);
    elem_t* sk = sq + WIDE_Q_ELEMS;
    elem_t* sv = sk + WIDE_STAGES * WIDE_STAGE_ELEMS;
    const unsigned full0 = smem_addr(sv + WIDE_STAGES * WIDE_STAGE_ELEMS);  // STAGES full barriers, then STAGES empty
    const unsigned empty0 = full0 + 8 * WIDE_STAGES;
    const int consumers = it.n_rows > 64 ? 2 : 1;  // consumer warpgroups with rows
    const int n_tiles = (it.kv_end - it.kv_begin + WIDE_N - 1) / WIDE_N;
    if (threadIdx.x == 0) {
        for (int s = 0; s < WIDE_STAGES; ++s) {
            mbar_init(full0 + 8 * s, 128);
            mbar_init(empty0 + 8 * s, 4 * consumers);
        }
    }
    __syncthreads();
    const int wg = threadIdx.x / 128;
    if (wg == 0) {
        wide_producer(p, it, n_tiles, sq, sk, full0, empty0, kvh);
    } else if (wg <= consumers) {
        wide_consumer(p, it, n_tiles, wg - 1, sq, sk, sv, full0, empty0, kvh);
    }
    pat_stamp(3, PAT_TIMING_WIDE_BASE, threadIdx.x == 128);
}
#endif

// One warp per (request, q head): grid = (requests, ceil(q_heads / MERGE_WARPS)), MERGE_WARPS warps.
extern "C" __global__ void __launch_bounds__(MERGE_WARPS * 32) pat_merge(const PatMergeParams p) {
    const int req = blockIdx.x;
    const int head = blockIdx.y * MERGE_WARPS + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (req >= p.num_requests || head >= p.num_q_heads) return;
    const int lo = p.merge_indptr[req];
    const int hi = p.merge_indptr[req + 1];
    if (hi == lo) return;  // written directly by pat_pack_forward
    float mx = PAT_NEG_INF;
    for (int k = lo + lane; k < hi; k += 32)
        mx = fmaxf(mx, p.part_lse[(long long)p.merge_partials[k] * p.num_q_heads + head]);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, off));
    constexpr int PER_LANE = HEAD_DIM / 32;  // 2, 4 or 8 consecutive elements per lane
    float acc[PER_LANE];
#pragma unroll
    for (int i = 0; i < PER_LANE; ++i) acc[i] = 0.f;
    float den = 0.f;
    for (int k = lo; k < hi; ++k) {
        const long long row = (long long)p.merge_partials[k] * p.num_q_heads + head;
        const float w = exp2f(p.part_lse[row] - mx);
        const io_t* src = p.part_o + row * HEAD_DIM + lane * PER_LANE;
        den += w;
#pragma unroll
        for (int i = 0; i < PER_LANE; i += 2) {
            const float2 v = pat_io2_to_float2(*reinterpret_cast<const io2_t*>(src + i));
            acc[i] += w * v.x;
            acc[i + 1] += w * v.y;
        }
    }
    const float inv = 1.f / den;
    io_t* dst = p.out + (long long)req * p.out_stride + head * HEAD_DIM + lane * PER_LANE;
#pragma unroll
    for (int i = 0; i < PER_LANE; i += 2)
        *reinterpret_cast<io2_t*>(dst + i) = pat_float2_to_io2(acc[i] * inv, acc[i + 1] * inv);
}
