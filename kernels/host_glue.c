/* The Python side of three compiled planner pieces, compiled too: an extension module (CPython and numpy C API) that
   takes the planner's arrays as objects, checks them, allocates the outputs and calls host_items.c / host_edit.c
   (built into the same module) directly. pat_sglang/host_core.py builds it and imports it from the build cache.

   Role in pack-forward-merge: part of *pack*. The ctypes wrappers of pat_plan_items, pat_edit_forest and
   pat_edit_places (host_core._HostCore) check dtypes and shapes, allocate the outputs, take each array's address
   (ctypes views), convert 12-24 arguments and slice the results into views: ~20-60 numpy and ctypes calls around
   each compiled call. On a changed decode step of 256 requests in the Mooncake replay on the project's 2-core VM that
   glue, run cold between two steps, cost ~70 / 45 / 34 us against ~45 / 16 / 8 us for the compiled work it wraps.
   Here each is one METH_FASTCALL call: the same checks and arrays (same dtypes, shapes and values; views of one
   buffer where the ctypes version returns views of one buffer), the Python version (host_core._HostCore's ctypes
   wrappers, and the numpy references behind them) kept as the fallback and compared in tests/test_host_core.py.

   plan_items(pack_tokens, kv_offset, pack_req_count, pack_req, splits, reqs_per_block, tile_of_size, tile_m_of_size,
              long_tokens, leaf_pack, num_requests, num_items, num_entries, max_partials, item_fields)
     -> (items, item_req, item_dst, merge_indptr, merge_partials, num_partials, item_pack, item_split, open_mask,
         longest item's tokens, open items), or None over max_partials: host_core._HostCore.plan_items.
   edit_forest(kept, width, kept_q, attach, seq) -> dict of the forest's arrays, or None: _HostCore.edit_forest.
   edit_places(old_of, old_attach, old_first, joiners, placed, n) -> (attach, first, groups): _HostCore.edit_places.
   edit_common(old_of, joiners, leavers, entries, ...) -> (edit_forest's dict or the staying kept nodes' _Kept.make
   arguments, attach, first, member counts), None (refused) or NotImplemented: forest_edit.RadixIndex.edit after its
   survivors in one call instead of its Python loops, _shared, _Kept.with_nodes / without and two calls.
   write_paths(keys, lengths, rows, sigs): the published rows' pending node ids and tokens written into the row
   tables (chain_table._RowPaths.flush: ~3 ints per node through a Python iterator, 80-320 us before a forest built
   from the paths at 256 requests on the VM), None, or NotImplemented (nothing written) for what it does not take.
   gather_paths(keys, lengths, depth, rows): a batch's flat radix paths from those tables (chain_table._RowPaths.paths,
   ~10 numpy calls and a 2-D fancy-index copy per table before a forest built from the paths), or NotImplemented.
   remade_items(prev_items, prev_req, prev_dst, prev_requests, prev_partials, old_index, rows, seq, stride, split,
                tile_of_size, tile_m_of_size, long_tokens, lo, hi, max_items, max_partials, max_entries)
     -> (items, item_req, item_dst, merge_indptr, merge_partials, partials, planned tokens, longest item's tokens),
     None where planner.remade_plan returns None, NotImplemented for what it does not take (host_remade.c).
   forest_from_paths(e_req, e_key, e_len, seq, index) -> (tok, start, parent, depth, req_ptr, req_flat, radix index
   or None), None where the numpy version builds it (no entry with tokens) or raises, NotImplemented for arrays it
   does not take: PrefixForest.from_paths (host_paths.c; the numpy version is the fallback and the reference).
   split_length(candidates, longest, ...) -> the split search's choice: _HostCore.split_length (host_simulate.c, built
   into the module too; its ctypes wrapper cost ~11 us around a ~30 us search at 256 requests).
   plan_pass(forest arrays, the pass's numbers, ...) -> a planning pass's packs, split counts and items in one call
   (planner._compiled_pass: host_pass.c, then host_items.c), or NotImplemented where planner._numpy_pass decides.
   stage_plan(stage, offsets, sizes, first, plan arrays, num_requests): a CUDA-graph load's host writes in one call
   (kernels._stage_plan's numpy copies the fallback and reference).
   count_bound(refs, firsts, shape...) and moved_bound(blocks, partials, cached, seq_lens, total, token_bytes): the
   dispatch gate's lower bound of a batch's plan bytes, before any forest (planner.count_bound, planner.moved_bound).

   The same holds for the publisher's passes over a changed decode batch's rows (sglang_patches/chain_table.py,
   publish.py): the rows' generations gathered, the rows to read found, the batch's read-only arrays copied were ~13
   numpy calls of 2-8 us each run cold, around loops over 256 integers. gens_at, rows_to_read and batch_arrays (below)
   are one call each; chain_table's numpy versions are the fallback (also for arrays these do not take: they answer
   NotImplemented) and the reference in tests/test_host_core.py. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>
#include <stdint.h>
#include <string.h>

#include "host_bound.h"
#include "host_launch.h"
#include "host_plan.h"

/* obj as a C-contiguous 1-D array in native byte order of `type` (NPY_INT64 and NPY_INT32: any signed integer type of
   that size, as numpy's dtype comparison with np.int64 / np.int32 accepts; NPY_BOOL: bool; NPY_FLOAT64: float64) of
   `len` entries where len >= 0, else NULL (no exception set) */
static PyArrayObject *vec(PyObject *obj, int type, npy_intp len) {
    if (!PyArray_Check(obj)) return NULL;
    PyArrayObject *a = (PyArrayObject *)obj;
    if (PyArray_NDIM(a) != 1 || !PyArray_IS_C_CONTIGUOUS(a) || !PyArray_ISNOTSWAPPED(a)) return NULL;
    if (type == NPY_BOOL || type == NPY_FLOAT64
            ? PyArray_TYPE(a) != type
            : !PyArray_ISSIGNED(a) || PyArray_ITEMSIZE(a) != (type == NPY_INT64 ? 8 : 4))
        return NULL;
    if (len >= 0 && PyArray_DIM(a, 0) != len) return NULL;
    return a;
}

/* A fresh 1-D array of n entries of `type` (zeroed where zero is set) */
static PyObject *fresh(npy_intp n, int type, int zero) {
    return zero ? PyArray_ZEROS(1, &n, type, 0) : PyArray_EMPTY(1, &n, type, 0);
}

/* A C-contiguous view of shape dims[0..nd) of `type` at byte `offset` into the C-contiguous array `base` (which it
   keeps alive) */
static PyObject *view_nd(PyObject *base, npy_intp offset, int nd, npy_intp *dims, int type) {
    PyObject *v = PyArray_New(&PyArray_Type, nd, dims, type, NULL, (char *)PyArray_DATA((PyArrayObject *)base) + offset,
                              0, NPY_ARRAY_CARRAY, NULL);
    if (v == NULL) return NULL;
    Py_INCREF(base);
    if (PyArray_SetBaseObject((PyArrayObject *)v, base) < 0) {
        Py_DECREF(v);
        return NULL;
    }
    return v;
}

/* A 1-D view of n entries of `type` at byte `offset` into `base` */
static PyObject *view(PyObject *base, npy_intp offset, npy_intp n, int type) {
    return view_nd(base, offset, 1, &n, type);
}

/* Whether the METH_FASTCALL function `name` got `want` arguments; else a TypeError is set and 0 returned */
static int takes(const char *name, Py_ssize_t nargs, Py_ssize_t want) {
    if (nargs == want) return 1;
    PyErr_Format(PyExc_TypeError, "%s takes %zd argument%s", name, want, want == 1 ? "" : "s");
    return 0;
}

static int as_int64(PyObject *obj, int64_t *out) {
    long long v = PyLong_AsLongLong(obj);
    if (v == -1 && PyErr_Occurred()) return -1;
    *out = (int64_t)v;
    return 0;
}

/* The items of a pass's packs (host_items.c pat_plan_items) as plan_items' tuple, or None over max_partials; NULL with
   an exception set on failure. leaf_pack: a byte per pack, or NULL (no open ends). */
static PyObject *laid_items(npy_intp packs, const int64_t *pack_tokens, const int64_t *kv_offset,
                            const int64_t *pack_req_count, const int32_t *pack_req, const int64_t *splits, int64_t rpb,
                            PyObject *tile_of_size, PyObject *tile_m_of_size, int64_t long_tokens,
                            const uint8_t *leaf_pack, int64_t num_requests, int64_t num_items, int64_t num_entries,
                            int64_t max_partials, int64_t fields) {
    /* the tile tables: int64 as the ctypes version's ascontiguousarray makes them (usually already so) */
    PyObject *tiles = PyArray_FROM_OTF(tile_of_size, NPY_INT64, NPY_ARRAY_IN_ARRAY);
    PyObject *tile_ms = tiles ? PyArray_FROM_OTF(tile_m_of_size, NPY_INT64, NPY_ARRAY_IN_ARRAY) : NULL;
    PyObject *result = NULL, *items = NULL, *ints = NULL, *longs = NULL, *open_mask = NULL, *partials = NULL;
    PyObject *item_req = NULL, *item_dst = NULL, *indptr = NULL, *item_pack = NULL, *item_split = NULL;
    if (tile_ms == NULL) goto done;
    npy_intp dims[2] = {(npy_intp)num_items, (npy_intp)fields};
    items = PyArray_ZEROS(2, dims, NPY_INT32, 0);
    /* item_req, item_dst, merge_indptr, then room for merge_partials (one buffer, as the ctypes version's) */
    ints = fresh((npy_intp)(3 * num_entries + num_requests + 1), NPY_INT32, 0);
    longs = fresh((npy_intp)(2 * num_items + 2), NPY_INT64, 0);
    open_mask = leaf_pack != NULL ? fresh((npy_intp)num_items, NPY_BOOL, 0) : (Py_INCREF(Py_None), Py_None);
    if (!items || !ints || !longs || !open_mask) goto done;
    int32_t *i32 = (int32_t *)PyArray_DATA((PyArrayObject *)ints);
    int64_t *i64 = (int64_t *)PyArray_DATA((PyArrayObject *)longs);
    int64_t got = pat_plan_items(
        packs, pack_tokens, kv_offset, pack_req_count, pack_req, splits, rpb, PyArray_DATA((PyArrayObject *)tiles),
        PyArray_DATA((PyArrayObject *)tile_ms), long_tokens, leaf_pack, num_requests, num_items, num_entries,
        max_partials, PyArray_DATA((PyArrayObject *)items), i32, i32 + num_entries, i32 + 2 * num_entries,
        i32 + 2 * num_entries + num_requests + 1, i64, i64 + num_items,
        leaf_pack ? PyArray_DATA((PyArrayObject *)open_mask) : NULL, i64 + 2 * num_items);
    if (got == -1) {
        Py_INCREF(Py_None);
        result = Py_None;
        goto done;
    }
    if (got < 0) {
        PyErr_SetString(PyExc_MemoryError, "pat_plan_items: no scratch memory");
        goto done;
    }
    const npy_intp merge_at = 2 * num_entries + num_requests + 1;
    item_req = view(ints, 0, num_entries, NPY_INT32);
    item_dst = view(ints, 4 * num_entries, num_entries, NPY_INT32);
    indptr = view(ints, 8 * num_entries, num_requests + 1, NPY_INT32);
    partials = view(ints, 4 * merge_at, got, NPY_INT32);
    item_pack = view(longs, 0, num_items, NPY_INT64);
    item_split = view(longs, 8 * num_items, num_items, NPY_INT64);
    if (!item_req || !item_dst || !indptr || !partials || !item_pack || !item_split) goto done;
    result = Py_BuildValue("(OOOOOLOOOLL)", items, item_req, item_dst, indptr, partials, (long long)got, item_pack,
                           item_split, open_mask, (long long)i64[2 * num_items], (long long)i64[2 * num_items + 1]);
done:
    Py_XDECREF(tiles);
    Py_XDECREF(tile_ms);
    Py_XDECREF(items);
    Py_XDECREF(ints);
    Py_XDECREF(longs);
    Py_XDECREF(open_mask);
    Py_XDECREF(item_req);
    Py_XDECREF(item_dst);
    Py_XDECREF(indptr);
    Py_XDECREF(partials);
    Py_XDECREF(item_pack);
    Py_XDECREF(item_split);
    return result;
}

static PyObject *plan_items(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (!takes("plan_items", nargs, 15)) return NULL;
    PyArrayObject *pack_tokens = vec(args[0], NPY_INT64, -1);
    const npy_intp packs = pack_tokens != NULL ? PyArray_DIM(pack_tokens, 0) : 0;
    PyArrayObject *kv_offset = vec(args[1], NPY_INT64, packs), *pack_req_count = vec(args[2], NPY_INT64, packs);
    PyArrayObject *pack_req = vec(args[3], NPY_INT32, -1), *splits = vec(args[4], NPY_INT64, packs);
    if (!pack_tokens || !kv_offset || !pack_req_count || !pack_req || !splits) {
        PyErr_SetString(PyExc_ValueError,
                        "plan_items: per-pack arrays must be C-contiguous int64 of one length, pack_req int32");
        return NULL;
    }
    PyArrayObject *leaf_pack = NULL;
    if (args[9] != Py_None) {
        leaf_pack = vec(args[9], NPY_BOOL, packs);
        if (leaf_pack == NULL) {
            PyErr_SetString(PyExc_ValueError, "plan_items: leaf_pack must be a bool per pack");
            return NULL;
        }
    }
    int64_t rpb, long_tokens, num_requests, num_items, num_entries, max_partials = -1, fields;
    if (as_int64(args[5], &rpb) || as_int64(args[8], &long_tokens) || as_int64(args[10], &num_requests) ||
        as_int64(args[11], &num_items) || as_int64(args[12], &num_entries) ||
        (args[13] != Py_None && as_int64(args[13], &max_partials)) || as_int64(args[14], &fields))
        return NULL;
    if (fields != ITEM_FIELDS || num_requests < 0 || num_items < 0 || num_entries < 0) {
        PyErr_SetString(PyExc_ValueError, "plan_items: item_fields must be the item layout's, counts >= 0");
        return NULL;
    }
    return laid_items(packs, PyArray_DATA(pack_tokens), PyArray_DATA(kv_offset), PyArray_DATA(pack_req_count),
                      PyArray_DATA(pack_req), PyArray_DATA(splits), rpb, args[6], args[7], long_tokens,
                      leaf_pack ? PyArray_DATA(leaf_pack) : NULL, num_requests, num_items, num_entries, max_partials,
                      fields);
}

/* plan_pass(q, tok, parent, start, req_ptr, req32, row_base, request_lengths, rpb, tok_bytes, partial_bytes,
             num_kv_heads, target, min_split_tokens, keep, split_tokens, long_tokens, limits, open_ends, table_len,
             tile_of_size, tile_m_of_size, constants, item_fields, block_token_bytes, block_overheads, chain_cost)
     -> (plan_items' tuple, (pack_node, top, pack_tokens, pack_ptr, pack_req, pack_req_count, pack_blocks, kv_offset,
         splits), (planned_tokens, split_tokens, chosen_for_tokens, request_tokens, unique_tokens, searched, coarser)),
     None where the plan would exceed `limits`, or NotImplemented where the numpy pass decides (a split search over
     packs that are all alike, a forest read beyond the table, arrays this does not take): planner._plan's work before
     its objects, in one call (host_pass.c, host_simulate.c's search, then host_items.c). The forest's arrays: per node
     int64 (req_ptr one more), req32 int32 per entry, per request int64. keep: None or (split length, planned tokens
     it was chosen for); split_tokens: None or the caller's; limits: None or (max_items, max_partials, max_entries);
     constants: (SPLIT_LADDER, MAX_WAVES, SPLIT_STEPS_UP, SPLIT_KEEP_FRACTION, TAIL_WAVE_DIVISOR, TAIL_SPLIT_FACTOR,
     MIN_SPLIT_TOKENS, tail split on, SPLIT_COST_TOLERANCE, RUN_BATCH_ITEMS); block_token_bytes (int64) /
     block_overheads (float64): planner._block_costs' tables; chain_cost: planner._chain_cost. Where every shared node
     pays for its own pack, pack_node and top are None and the pack arrays are the forest's own objects (q, tok,
     req_ptr, req32), as in the numpy version. */
static PyObject *plan_pass(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (!takes("plan_pass", nargs, 27)) return NULL;
    PyArrayObject *q = vec(args[0], NPY_INT64, -1);
    const npy_intp nodes = q ? PyArray_DIM(q, 0) : 0;
    PyArrayObject *tok = vec(args[1], NPY_INT64, nodes), *parent = vec(args[2], NPY_INT64, nodes);
    PyArrayObject *start = vec(args[3], NPY_INT64, nodes), *req_ptr = vec(args[4], NPY_INT64, nodes + 1);
    PyArrayObject *req32 = vec(args[5], NPY_INT32, -1), *row_base = vec(args[6], NPY_INT64, -1);
    PyArrayObject *lengths = vec(args[7], NPY_INT64, row_base ? PyArray_DIM(row_base, 0) : -1);
    if (!q || !tok || !parent || !start || !req_ptr || !req32 || !row_base || !lengths || nodes == 0)
        Py_RETURN_NOTIMPLEMENTED;
    const npy_intp entries = PyArray_DIM(req32, 0), requests = PyArray_DIM(row_base, 0);
    const int64_t *ptr = (const int64_t *)PyArray_DATA(req_ptr);
    const int32_t *rq = (const int32_t *)PyArray_DATA(req32);
    if (ptr[0] != 0 || ptr[nodes] != entries) Py_RETURN_NOTIMPLEMENTED;
    for (npy_intp e = 0; e < entries; e++)
        if (rq[e] < 0 || rq[e] >= requests) Py_RETURN_NOTIMPLEMENTED;
    for (npy_intp i = 0; i < nodes; i++) /* parents precede their children; counts from the pointers */
        if (ptr[i + 1] < ptr[i] || ((const int64_t *)PyArray_DATA(parent))[i] >= i ||
            ((const int64_t *)PyArray_DATA(q))[i] != ptr[i + 1] - ptr[i])
            Py_RETURN_NOTIMPLEMENTED;
    PatPassIn in;
    memset(&in, 0, sizeof(in));
    in.nodes = nodes;
    in.entries = entries;
    in.requests = requests;
    in.q = PyArray_DATA(q);
    in.tok = PyArray_DATA(tok);
    in.parent = PyArray_DATA(parent);
    in.start = PyArray_DATA(start);
    in.req_ptr = ptr;
    in.req32 = rq;
    in.row_base = PyArray_DATA(row_base);
    in.request_lengths = PyArray_DATA(lengths);
    int64_t long_tokens, table_len, fields, open_ends;
    if (as_int64(args[8], &in.rpb) || as_int64(args[9], &in.tok_bytes) || as_int64(args[10], &in.partial_bytes) ||
        as_int64(args[11], &in.num_kv_heads) || as_int64(args[12], &in.target) ||
        as_int64(args[13], &in.min_split_tokens) || as_int64(args[16], &long_tokens) ||
        as_int64(args[19], &table_len) || as_int64(args[23], &fields))
        return NULL;
    open_ends = PyObject_IsTrue(args[18]);
    if (open_ends < 0) return NULL;
    if (args[14] != Py_None && !PyArg_ParseTuple(args[14], "LL", &in.keep_split, &in.keep_for)) return NULL;
    if (args[15] != Py_None && as_int64(args[15], &in.fixed_split)) return NULL;
    in.limited = args[17] != Py_None;
    if (in.limited && !PyArg_ParseTuple(args[17], "LLL", &in.max_items, &in.max_partials, &in.max_entries))
        return NULL;
    PyObject *ladder;
    if (!PyArg_ParseTuple(args[22], "OLLdLLLLdL", &ladder, &in.max_waves, &in.steps_up, &in.keep_fraction,
                          &in.tail_divisor, &in.tail_factor, &in.min_split, &in.tail_on, &in.cost_tolerance,
                          &in.run_batch_items))
        return NULL;
    PyArrayObject *token_costs = vec(args[24], NPY_INT64, -1);
    PyArrayObject *fixed_costs = vec(args[25], NPY_FLOAT64, token_costs ? PyArray_DIM(token_costs, 0) : -1);
    in.chain_cost = PyFloat_AsDouble(args[26]);
    if (in.chain_cost == -1.0 && PyErr_Occurred()) return NULL;
    if (!token_costs || !fixed_costs) Py_RETURN_NOTIMPLEMENTED;
    in.block_token_bytes = PyArray_DATA(token_costs);
    in.block_overheads = PyArray_DATA(fixed_costs);
    in.n_block_costs = PyArray_DIM(fixed_costs, 0);
    if (fields != ITEM_FIELDS || in.rpb < 1 || in.target < 1 || in.num_kv_heads < 1 || in.min_split < 1 ||
        in.keep_split < 0 || in.fixed_split < 0 || !PyTuple_Check(ladder) || PyTuple_GET_SIZE(ladder) > 32)
        Py_RETURN_NOTIMPLEMENTED;
    double steps[32];
    in.n_ladder = PyTuple_GET_SIZE(ladder);
    for (Py_ssize_t i = 0; i < in.n_ladder; i++) {
        steps[i] = PyFloat_AsDouble(PyTuple_GET_ITEM(ladder, i));
        if (steps[i] == -1.0 && PyErr_Occurred()) return NULL;
    }
    in.ladder = steps;
    in.table_len = table_len;
    in.long_tokens = long_tokens;

    /* the outputs: per node int64 x 9 (+1 for pack_ptr), per entry int32, per node bytes */
    PyObject *longs = fresh((npy_intp)(10 * nodes + 1), NPY_INT64, 0), *ints = fresh(entries, NPY_INT32, 0);
    PyObject *leaf = fresh(nodes, NPY_BOOL, 0);
    PyObject *result = NULL, *laid = NULL, *packs_t = NULL, *numbers = NULL;
    PyObject *v[9] = {NULL};
    if (!longs || !ints || !leaf) goto done;
    int64_t *l = (int64_t *)PyArray_DATA((PyArrayObject *)longs);
    PatPassOut out;
    memset(&out, 0, sizeof(out));
    out.kv_offset = l;
    out.pack_blocks = l + nodes;
    out.splits = l + 2 * nodes;
    out.cut = l + 3 * nodes;
    out.pack_node = l + 4 * nodes;
    out.pack_counts = l + 5 * nodes;
    out.pack_tokens = l + 6 * nodes;
    out.top = l + 7 * nodes;
    out.pack_ptr = l + 8 * nodes; /* nodes + 1 */
    out.pack_req = (int32_t *)PyArray_DATA((PyArrayObject *)ints);
    out.leaf_pack = (uint8_t *)PyArray_DATA((PyArrayObject *)leaf);
    const int64_t status = pat_plan_packs(&in, &out);
    if (status == PAT_PASS_NO_MEMORY) {
        PyErr_NoMemory();
        goto done;
    }
    if (status == PAT_PASS_PYTHON || status == PAT_PASS_BEYOND_TABLE) {
        Py_INCREF(Py_NotImplemented);
        result = Py_NotImplemented;
        goto done;
    }
    if (status == PAT_PASS_OVER_LIMITS) {
        Py_INCREF(Py_None);
        result = Py_None;
        goto done;
    }
    const npy_intp P = (npy_intp)out.packs;
    const int64_t *pack_tokens = out.all_pay ? in.tok : out.pack_tokens;
    const int64_t *pack_counts = out.all_pay ? in.q : out.pack_counts;
    const int32_t *pack_req = out.all_pay ? in.req32 : out.pack_req;
    laid = laid_items(P, pack_tokens, out.kv_offset, pack_counts, pack_req, out.splits, in.rpb, args[20], args[21],
                      long_tokens, open_ends ? out.leaf_pack : NULL, requests, out.num_items, out.num_entries,
                      in.limited ? in.max_partials : -1, fields);
    if (laid == NULL) goto done;
    if (laid == Py_None) {
        result = laid;
        laid = NULL;
        goto done;
    }
    if (out.all_pay) {
        Py_INCREF(Py_None);
        v[0] = Py_None;
        Py_INCREF(Py_None);
        v[1] = Py_None;
        v[2] = args[1];
        v[3] = args[4];
        v[4] = args[5];
        v[5] = args[0];
        Py_INCREF(v[2]);
        Py_INCREF(v[3]);
        Py_INCREF(v[4]);
        Py_INCREF(v[5]);
    } else {
        v[0] = view(longs, 8 * 4 * nodes, P, NPY_INT64);
        v[1] = view(longs, 8 * 7 * nodes, nodes, NPY_INT64);
        v[2] = view(longs, 8 * 6 * nodes, P, NPY_INT64);
        v[3] = view(longs, 8 * 8 * nodes, P + 1, NPY_INT64);
        v[4] = view(ints, 0, (npy_intp)out.pack_entries, NPY_INT32);
        v[5] = view(longs, 8 * 5 * nodes, P, NPY_INT64);
    }
    v[6] = view(longs, 8 * nodes, P, NPY_INT64);
    v[7] = view(longs, 0, P, NPY_INT64);
    v[8] = view(longs, 8 * 2 * nodes, P, NPY_INT64);
    for (int i = 0; i < 9; i++)
        if (v[i] == NULL) goto done;
    packs_t = PyTuple_Pack(9, v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8]);
    numbers = Py_BuildValue("(LLLLLOO)", (long long)out.planned_tokens, (long long)out.split_tokens,
                            (long long)out.chosen_for_tokens, (long long)out.request_tokens,
                            (long long)out.unique_tokens, out.searched ? Py_True : Py_False,
                            out.coarser ? Py_True : Py_False);
    if (packs_t && numbers) result = PyTuple_Pack(3, laid, packs_t, numbers);
done:
    Py_XDECREF(longs);
    Py_XDECREF(ints);
    Py_XDECREF(leaf);
    Py_XDECREF(laid);
    Py_XDECREF(packs_t);
    Py_XDECREF(numbers);
    for (int i = 0; i < 9; i++) Py_XDECREF(v[i]);
    return result;
}

/* stage_plan(stage, offsets, sizes, first, items, item_req, item_dst, merge_indptr, merge_partials, num_requests):
   kernels.StaticPlanBuffers.load's host writes in one call: the plan's arrays into one staging set (`stage`: the
   set's flat int32 array; `offsets` / `sizes`: element offset and length of each buffer in kernels._LOAD_ORDER,
   item_req, item_dst, merge_indptr, merge_partials, num_items, items), from buffer `first` of that order on. Each
   buffer gets the plan's values at its start; merge_indptr's entries past the plan's requests repeat its last value
   (padding requests have no partials); num_items holds the item count. None; NotImplemented for arrays other than
   C-contiguous int32 (items 2-D) or a plan that does not fit the buffers (kernels._stage_plan, the numpy version and
   the reference, then writes or refuses them). */
static PyObject *stage_plan(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (!takes("stage_plan", nargs, 10)) return NULL;
    PyArrayObject *stage = vec(args[0], NPY_INT32, -1);
    PyArrayObject *req = vec(args[5], NPY_INT32, -1), *dst = vec(args[6], NPY_INT32, -1);
    PyArrayObject *indptr = vec(args[7], NPY_INT32, -1), *partials = vec(args[8], NPY_INT32, -1);
    PyArrayObject *items = PyArray_Check(args[4]) ? (PyArrayObject *)args[4] : NULL;
    int64_t first, num_requests, offsets[6], sizes[6];
    if (as_int64(args[3], &first) || as_int64(args[9], &num_requests)) return NULL;
    if (!PyArg_ParseTuple(args[1], "LLLLLL", &offsets[0], &offsets[1], &offsets[2], &offsets[3], &offsets[4],
                          &offsets[5]) ||
        !PyArg_ParseTuple(args[2], "LLLLLL", &sizes[0], &sizes[1], &sizes[2], &sizes[3], &sizes[4], &sizes[5]))
        return NULL;
    if (!stage || !req || !dst || !indptr || !partials || !items || PyArray_NDIM(items) != 2 ||
        PyArray_TYPE(items) != NPY_INT32 || !PyArray_IS_C_CONTIGUOUS(items) || first < 0 || first > 5 ||
        num_requests < 0 || PyArray_DIM(indptr, 0) != num_requests + 1)
        Py_RETURN_NOTIMPLEMENTED;
    const npy_intp total = PyArray_DIM(stage, 0);
    for (int b = 0; b < 6; b++)
        if (offsets[b] < 0 || sizes[b] < 0 || offsets[b] + sizes[b] > total) Py_RETURN_NOTIMPLEMENTED;
    const int64_t n_items = PyArray_DIM(items, 0), item_ints = n_items * PyArray_DIM(items, 1);
    const int64_t lengths[6] = {PyArray_DIM(req, 0), PyArray_DIM(dst, 0), num_requests + 1, PyArray_DIM(partials, 0), 1,
                                item_ints};
    for (int b = (int)first; b < 6; b++)
        if (lengths[b] > sizes[b]) Py_RETURN_NOTIMPLEMENTED;
    int32_t *out = (int32_t *)PyArray_DATA(stage);
    const int32_t *from[6] = {PyArray_DATA(req), PyArray_DATA(dst), PyArray_DATA(indptr), PyArray_DATA(partials), NULL,
                              PyArray_DATA(items)};
    for (int b = (int)first; b < 6; b++) {
        int32_t *to = out + offsets[b];
        if (b == 4) {
            to[0] = (int32_t)n_items;
            continue;
        }
        memcpy(to, from[b], sizeof(int32_t) * (size_t)lengths[b]);
        if (b == 2) /* padding requests: no partials */
            for (int64_t i = lengths[b]; i < sizes[b]; i++) to[i] = to[lengths[b] - 1];
    }
    Py_RETURN_NONE;
}

static const char *const FOREST_NAMES[7] = {"tok", "start", "parent", "depth", "q", "rep", "ending"};

/* The edited forest's arrays (host_edit.c pat_edit_forest) as edit_forest's dict, from the kept nodes packed, their
   member counts q (num_kept int64: kept by the caller, read only) and per request its attach node and length; None
   where pat_edit_forest refuses (an empty leaf, counts that do not add up); NULL with an exception set on failure. */
static PyObject *forest_arrays(PyArrayObject *kept, int64_t width, const int64_t *q, npy_intp num_kept,
                               PyArrayObject *attach, PyArrayObject *seq) {
    const npy_intp n = PyArray_DIM(attach, 0);
    int64_t members = 0;
    for (npy_intp k = 0; k < num_kept; k++) members += q[k];
    const npy_intp nodes = num_kept + n, entries = members + n, head = 8 * nodes + 1 + n;
    PyObject *buf = fresh(head + 2 * entries + (entries + 1) / 2 + (entries + 7) / 8, NPY_INT64, 0);
    PyObject *out = NULL, *v = NULL;
    if (buf == NULL) return NULL;
    int64_t *b = (int64_t *)PyArray_DATA((PyArrayObject *)buf);
    if (pat_edit_forest(num_kept, width, PyArray_DATA(kept), q, n, PyArray_DATA(attach), PyArray_DATA(seq), b,
                        entries) < 0) {
        Py_DECREF(buf);
        Py_RETURN_NONE;
    }
    out = PyDict_New();
    if (out == NULL) goto fail;
#define PUT(name, expr)                                                      \
    do {                                                                     \
        v = (expr);                                                          \
        if (v == NULL || PyDict_SetItemString(out, (name), v) < 0) goto fail; \
        Py_DECREF(v);                                                        \
        v = NULL;                                                            \
    } while (0)
    for (int k = 0; k < 7; k++) PUT(FOREST_NAMES[k], view(buf, 8 * k * nodes, nodes, NPY_INT64));
    PUT("req_ptr", view(buf, 8 * 7 * nodes, nodes + 1, NPY_INT64));
    PUT("last_node", view(buf, 8 * (8 * nodes + 1), n, NPY_INT64));
    PUT("req_flat", view(buf, 8 * head, entries, NPY_INT64));
    PUT("entry_node", view(buf, 8 * (head + entries), entries, NPY_INT64));
    const npy_intp tail = 8 * (head + 2 * entries);
    PUT("req32", view(buf, tail, entries, NPY_INT32));
    PUT("ends_here", view(buf, tail + 4 * 2 * ((entries + 1) / 2), entries, NPY_BOOL));
    /* shared: q > 1, a fresh array (the ctypes version's comparison makes one) */
    v = fresh(nodes, NPY_BOOL, 0);
    if (v == NULL) goto fail;
    {
        npy_bool *s = (npy_bool *)PyArray_DATA((PyArrayObject *)v);
        const int64_t *qq = b + 4 * nodes;
        for (npy_intp i = 0; i < nodes; i++) s[i] = qq[i] > 1;
    }
    if (PyDict_SetItemString(out, "shared", v) < 0) goto fail;
    Py_DECREF(v);
#undef PUT
    Py_DECREF(buf);
    return out;
fail:
    Py_XDECREF(v);
    Py_XDECREF(out);
    Py_DECREF(buf);
    return NULL;
}

/* Whether kept (the kept nodes packed, as edit_forest takes them) has 4 * num_kept + (2 + width) * (num_kept + 1)
   entries */
static int kept_fits(PyArrayObject *kept, npy_intp num_kept, int64_t width) {
    return kept != NULL && width >= 1 && PyArray_DIM(kept, 0) == 4 * num_kept + (2 + width) * (num_kept + 1);
}

static PyObject *edit_forest(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (!takes("edit_forest", nargs, 5)) return NULL;
    int64_t width;
    if (as_int64(args[1], &width)) return NULL;
    PyObject *kept_q = args[2];
    if (!PyList_Check(kept_q)) {
        PyErr_SetString(PyExc_TypeError, "edit_forest: kept_q must be a list of ints");
        return NULL;
    }
    const Py_ssize_t num_kept = PyList_GET_SIZE(kept_q);
    PyArrayObject *kept = vec(args[0], NPY_INT64, -1), *attach = vec(args[3], NPY_INT64, -1);
    const npy_intp n = attach != NULL ? PyArray_DIM(attach, 0) : 0;
    PyArrayObject *seq = vec(args[4], NPY_INT64, n);
    if (!kept || !attach || !seq || PyArray_DIM(kept, 0) != 4 * num_kept + (2 + width) * (num_kept + 1)) {
        PyErr_SetString(PyExc_ValueError, "edit_forest: C-contiguous int64 arrays: the kept nodes packed, one attach "
                                          "node and one length per request");
        return NULL;
    }
    PyObject *counts = fresh(num_kept, NPY_INT64, 0);
    if (counts == NULL) return NULL;
    int64_t *q = (int64_t *)PyArray_DATA((PyArrayObject *)counts);
    for (Py_ssize_t k = 0; k < num_kept; k++) {
        if (as_int64(PyList_GET_ITEM(kept_q, k), &q[k])) {
            Py_DECREF(counts);
            return NULL;
        }
    }
    PyObject *out = forest_arrays(kept, width, q, num_kept, attach, seq);
    Py_DECREF(counts);
    return out;
}

/* A joining request's place among the kept nodes (forest_edit.RadixIndex._place): its signature (a tuple of
   (node id, data pointer, tokens) tuples, its own node first) walked root first through chain (radix key -> kept
   node). 1 with *attach, *key set; 0 where the path is not whole kept chains followed by radix nodes outside them
   (refused); -1 where the arguments are not of that shape (NotImplemented; no exception left set). */
static int place_joiner(PyObject *entry, PyObject *chain, PyObject *deepest, const int64_t *parent,
                        const int64_t *kept_end, npy_intp num_kept, int64_t *attach_out, int64_t *key_out) {
    PyObject *sig = PyObject_GetAttrString(entry, "signature");
    if (sig == NULL || !PyTuple_Check(sig)) {
        Py_XDECREF(sig);
        PyErr_Clear();
        return -1;
    }
    int64_t attach = -1, inside = -1, end = 0;
    int got = -1;
    for (Py_ssize_t i = PyTuple_GET_SIZE(sig) - 1; i >= 0; i--) {
        PyObject *node = PyTuple_GET_ITEM(sig, i);
        if (!PyTuple_Check(node) || PyTuple_GET_SIZE(node) < 3) goto done;
        PyObject *key = PyTuple_GET_ITEM(node, 0);
        int64_t length;
        if (as_int64(PyTuple_GET_ITEM(node, 2), &length)) goto done;
        PyObject *found = PyDict_GetItemWithError(chain, key);
        if (found == NULL) {
            if (PyErr_Occurred()) goto done;
            if (inside >= 0) {
                got = 0; /* leaves a kept chain before its kept node */
                goto done;
            }
            if (as_int64(key, key_out)) goto done;
            *attach_out = attach;
            got = 1;
            goto done;
        }
        int64_t k, deepest_key, key_id;
        if (as_int64(found, &k) || k < 0 || k >= num_kept) goto done;
        if (inside < 0) {
            if (parent[k] != attach) {
                got = 0;
                goto done;
            }
            inside = k;
        } else if (k != inside) {
            got = 0;
            goto done;
        }
        end += length;
        if (as_int64(PyList_GET_ITEM(deepest, k), &deepest_key) || as_int64(key, &key_id)) goto done;
        if (key_id == deepest_key) {
            if (end != kept_end[k + 1]) {
                got = 0;
                goto done;
            }
            attach = k;
            inside = -1;
        }
    }
    if (inside >= 0) {
        got = 0;
    } else {
        *attach_out = attach;
        *key_out = -1;
        got = 1;
    }
done:
    Py_DECREF(sig);
    if (got < 0) PyErr_Clear();
    return got;
}

/* Into the dict out: each key of chain (radix key -> kept node k < num_kept) whose node stays (stays[k], or every node
   where stays is NULL), at the node's new index new_id[k]. 0, or -1 with an exception set. */
static int remap_chain(PyObject *chain, npy_intp num_kept, const uint8_t *stays, const int64_t *new_id,
                       PyObject *out) {
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(chain, &pos, &key, &value)) {
        int64_t k;
        if (as_int64(value, &k)) return -1;
        if (k < 0 || k >= num_kept) {
            PyErr_SetString(PyExc_ValueError, "edit_common: a radix key of a kept node that does not exist");
            return -1;
        }
        if (stays != NULL && !stays[k]) continue;
        PyObject *id = PyLong_FromLongLong(new_id[k]);
        const int bad = id == NULL || PyDict_SetItem(out, key, id) < 0;
        Py_XDECREF(id);
        if (bad) return -1;
    }
    return 0;
}

/* A new list of the items of `list` (num_kept of them) at the kept nodes that stay */
static PyObject *kept_items(PyObject *list, const uint8_t *stays, npy_intp num_kept, npy_intp num_stay) {
    PyObject *out = PyList_New(num_stay);
    if (out == NULL) return NULL;
    for (npy_intp k = 0, at = 0; k < num_kept; k++) {
        if (!stays[k]) continue;
        PyObject *v = PyList_GET_ITEM(list, k);
        Py_INCREF(v);
        PyList_SET_ITEM(out, at++, v);
    }
    return out;
}

/* A new list of the int64 values v[k] (k < num_kept, stride 1) at the kept nodes that stay, each mapped through map
   (map[x + 1] for x, where map is not NULL) */
static PyObject *kept_ints(const int64_t *v, const uint8_t *stays, npy_intp num_kept, npy_intp num_stay,
                           const int64_t *map) {
    PyObject *out = PyList_New(num_stay);
    if (out == NULL) return NULL;
    for (npy_intp k = 0, at = 0; k < num_kept; k++) {
        if (!stays[k]) continue;
        PyObject *x = PyLong_FromLongLong(map != NULL ? map[v[k] + 1] : v[k]);
        if (x == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, at++, x);
    }
    return out;
}

/* edit_common's change of the kept nodes (num_kept of them: tok, start, parent, depth, q; deepest, ranks and tops lists,
   chain the radix key -> kept node dict; parents first): every kept node with q < 2 is dropped (with its kept descendants,
   which have fewer requests still), each request's leaf then reaching up to its nearest staying ancestor (attach
   remapped, in place) and its private part starting at the first radix key of the topmost node dropped above it
   (first, in place). Returns ((tok, start, parents, depth, chain, deepest, rank, top): _Kept.make's arguments for the
   staying kept nodes, attach, first, the staying member counts, whether a staying node has all of its parent's
   requests: those are not fused here, RadixIndex.edit does that with _Kept.fused), NULL with an exception set on
   failure. The same steps as RadixIndex.edit's `gone` block and _Kept.without, in their order. */
static PyObject *dissolved(npy_intp num_kept, const int64_t *tok, const int64_t *start, const int64_t *parent,
                           const int64_t *depth, const int64_t *q, PyObject *chain, PyObject *deepest, PyObject *tops,
                           PyObject *ranks, npy_intp n, int64_t *attach, int64_t *first) {
    PyObject *result = NULL, *made = NULL, *q_list = NULL, *new_chain = NULL;
    PyObject *lists[7] = {NULL};
    uint8_t *stays = PyMem_Malloc((size_t)num_kept + 1);
    int64_t *opens = PyMem_Malloc(sizeof(int64_t) * (size_t)(4 * (num_kept + 1)));
    if (stays == NULL || opens == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    int64_t *new_id = opens + (num_kept + 1), *moved = new_id + (num_kept + 1), *q_new = moved + (num_kept + 1);
    npy_intp num_stay = 0;
    for (npy_intp k = 0; k < num_kept; k++) {
        stays[k] = q[k] >= 2;
        num_stay += stays[k];
    }
    /* where each gone attach node's requests now start their private part: the topmost gone node's first key */
    for (npy_intp a = 0; a <= num_kept; a++) opens[a] = -1;
    for (npy_intp k = 0; k < num_kept; k++) {
        if (stays[k] || !(parent[k] < 0 || q[parent[k]] >= 2)) continue;
        int64_t top;
        if (as_int64(PyList_GET_ITEM(tops, k), &top)) goto done;
        for (npy_intp d = 0; d < num_kept; d++) { /* every gone node with k on its lineage (d, its ancestors) */
            if (q[d] >= 2) continue;
            for (int64_t x = d; x >= 0; x = parent[x]) {
                if (x == k) {
                    opens[d + 1] = top;
                    break;
                }
            }
        }
    }
    /* new indices: new_id[k] of a staying node, moved[a + 1] the nearest staying ancestor-or-self of a (-1: none) */
    moved[0] = -1;
    for (npy_intp k = 0, at = 0; k < num_kept; k++) {
        new_id[k] = at;
        at += stays[k];
        moved[k + 1] = stays[k] ? new_id[k] : moved[parent[k] + 1]; /* parents first */
    }
    for (npy_intp r = 0; r < n; r++) {
        const int64_t row = attach[r] + 1;
        if (opens[row] >= 0) first[r] = opens[row];
        attach[r] = moved[row];
    }
    /* the staying nodes' member counts (a node left with all of its parent's requests is fused by the caller,
       RadixIndex.edit's _Kept.fused) */
    q_list = PyList_New(num_stay);
    if (q_list == NULL) goto done;
    for (npy_intp k = 0, at = 0; k < num_kept; k++) {
        if (!stays[k]) continue;
        PyObject *v = PyLong_FromLongLong(q[k]);
        if (v == NULL) goto done;
        q_new[at] = q[k];
        PyList_SET_ITEM(q_list, at++, v);
    }
    int fuses = 0; /* a staying node with all of its new parent's requests (RadixIndex.edit fuses it: _Kept.fused) */
    for (npy_intp k = 0; k < num_kept && !fuses; k++) {
        if (!stays[k]) continue;
        const int64_t p = moved[parent[k] + 1];
        fuses = p >= 0 && q_new[new_id[k]] >= q_new[p];
    }
    new_chain = PyDict_New();
    if (new_chain == NULL || remap_chain(chain, num_kept, stays, new_id, new_chain) < 0) goto done;
    lists[0] = kept_ints(tok, stays, num_kept, num_stay, NULL);
    lists[1] = kept_ints(start, stays, num_kept, num_stay, NULL);
    lists[2] = kept_ints(parent, stays, num_kept, num_stay, moved);
    lists[3] = kept_ints(depth, stays, num_kept, num_stay, NULL);
    lists[4] = kept_items(deepest, stays, num_kept, num_stay);
    lists[5] = kept_items(ranks, stays, num_kept, num_stay);
    lists[6] = kept_items(tops, stays, num_kept, num_stay);
    for (int i = 0; i < 7; i++) {
        if (lists[i] == NULL) goto done;
    }
    made = PyTuple_Pack(8, lists[0], lists[1], lists[2], lists[3], new_chain, lists[4], lists[5], lists[6]);
    if (made == NULL) goto done;
    result = PyTuple_Pack(3, made, q_list, fuses ? Py_True : Py_False);
done:
    for (int i = 0; i < 7; i++) Py_XDECREF(lists[i]);
    Py_XDECREF(made);
    Py_XDECREF(q_list);
    Py_XDECREF(new_chain);
    PyMem_Free(stays);
    PyMem_Free(opens);
    return result;
}

/* A request's radix path, root first (forest_edit._path): its entry's signature `sig` (a tuple) read into keys and
   lens (node ids and tokens) from index *len on (room: cap); 1, or 0 where the signature is not of that shape or too
   long, -1 with an exception set on failure */
static int append_path(PyObject *sig, int64_t *keys, int64_t *lens, Py_ssize_t *len, Py_ssize_t cap) {
    if (*len + PyTuple_GET_SIZE(sig) > cap) return 0;
    for (Py_ssize_t i = PyTuple_GET_SIZE(sig) - 1; i >= 0; i--) {
        PyObject *node = PyTuple_GET_ITEM(sig, i);
        if (!PyTuple_Check(node) || PyTuple_GET_SIZE(node) < 3) return 0;
        if (as_int64(PyTuple_GET_ITEM(node, 0), &keys[*len]) || as_int64(PyTuple_GET_ITEM(node, 2), &lens[*len]))
            return -1;
        ++*len;
    }
    return 1;
}

/* A (depth, key, index) triple: a kept node's rank (the depth on the paths and the key of its deepest radix node) and
   its index among the old kept nodes then the new ones, as _Kept.with_nodes sorts them */
typedef struct {
    int64_t depth, key, index;
} RankAt;

static int rank_order(const void *a, const void *b) {
    const RankAt *x = a, *y = b;
    if (x->depth != y->depth) return x->depth < y->depth ? -1 : 1;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    return x->index < y->index ? -1 : (x->index > y->index);
}

/* edit_common's change that makes kept nodes (RadixIndex._shared, _Kept.with_nodes, then the `gone` block through
   dissolved): per group key (keys, ascending, each the first private key of two requests or more now) the requests
   with it must share one attach node and their radix paths the key at one depth; their common chain from it is a new
   kept node under that attach node, its members their requests, each one's first private key the radix key after the
   chain. The kept nodes, old and new, are ordered by rank; attach and first are rewritten in place. Returns what
   dissolved returns, None where RadixIndex._shared refuses, NotImplemented where a path is not of the shape read,
   NULL with an exception set. */
static PyObject *with_new_nodes(npy_intp num_kept, const int64_t *packed, const int64_t *q, PyObject *chain,
                                PyObject *deepest, PyObject *tops, PyObject *ranks, PyObject *entries, npy_intp n_real,
                                npy_intp n, int64_t *attach, int64_t *first, const int64_t *keys, npy_intp num_groups) {
    const int64_t *tok = packed, *start = packed + num_kept, *parent = packed + 2 * num_kept;
    const int64_t *depth = packed + 3 * num_kept, *kept_end = packed + 4 * num_kept;
    const npy_intp total = num_kept + num_groups;
    PyObject *result = NULL, *chain2 = NULL, *deepest2 = NULL, *ranks2 = NULL, *tops2 = NULL;
    /* per group: parent, tok, rank depth, chain offset and length, member offset and count */
    int64_t *g = PyMem_Malloc(sizeof(int64_t) * (size_t)(7 * num_groups + 1));
    int64_t *member = PyMem_Malloc(sizeof(int64_t) * (size_t)(2 * n + 1)); /* members, then their next keys */
    int64_t *arrays = PyMem_Malloc(sizeof(int64_t) * (size_t)(6 * total + 1)); /* tok2..q2, new_id */
    RankAt *order = PyMem_Malloc(sizeof(RankAt) * (size_t)(total + 1));
    int64_t *path_keys = NULL, *path_lens = NULL, *path_at = NULL, *chain_keys = NULL;
    PyObject **sigs = NULL; /* the members' signatures (new references), read once */
    npy_intp members = 0, chained = 0;
    if (!g || !member || !arrays || !order) {
        PyErr_NoMemory();
        goto done;
    }
    for (npy_intp i = 0; i < num_groups; i++) { /* the groups' members, ascending (RadixIndex._groups) */
        g[7 * i + 5] = members;
        for (npy_intp r = 0; r < n; r++) {
            if (first[r] == keys[i]) member[members++] = r;
        }
        g[7 * i + 6] = members - g[7 * i + 5];
    }
    /* the members' paths: every member's whole signature (room: their node counts) */
    sigs = PyMem_Calloc((size_t)members + 1, sizeof(PyObject *));
    if (sigs == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t cap = 0;
    for (npy_intp m = 0; m < members; m++) {
        if (member[m] >= n_real) { /* a padding request: no path (RadixIndex._shared refuses) */
            result = Py_None;
            Py_INCREF(result);
            goto done;
        }
        sigs[m] = PyObject_GetAttrString(PyTuple_GET_ITEM(entries, member[m]), "signature");
        if (sigs[m] == NULL) goto done;
        if (!PyTuple_Check(sigs[m])) {
            result = Py_NotImplemented;
            Py_INCREF(result);
            goto done;
        }
        cap += PyTuple_GET_SIZE(sigs[m]);
    }
    path_keys = PyMem_Malloc(sizeof(int64_t) * (size_t)(cap + 1));
    path_lens = PyMem_Malloc(sizeof(int64_t) * (size_t)(cap + 1));
    path_at = PyMem_Malloc(sizeof(int64_t) * (size_t)(members + 1)); /* where each member's path starts */
    chain_keys = PyMem_Malloc(sizeof(int64_t) * (size_t)(cap + 1));
    if (!path_keys || !path_lens || !path_at || !chain_keys) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t used = 0;
    for (npy_intp m = 0; m < members; m++) {
        path_at[m] = used;
        const int got = append_path(sigs[m], path_keys, path_lens, &used, cap);
        if (got < 0) goto done;
        if (got == 0) {
            result = Py_NotImplemented;
            Py_INCREF(result);
            goto done;
        }
    }
    path_at[members] = used;
#define MEMBER_LEN(m) (path_at[(m) + 1] - path_at[m])
#define MEMBER_KEY(m, j) (path_keys[path_at[m] + (j)])
#define MEMBER_TOKENS(m, j) (path_lens[path_at[m] + (j)])
    for (npy_intp i = 0; i < num_groups; i++) { /* each group's common chain (RadixIndex._shared) */
        const npy_intp lo = g[7 * i + 5], count = g[7 * i + 6];
        const int64_t a = attach[member[lo]];
        int64_t at = -1;
        for (npy_intp m = lo; m < lo + count; m++) {
            int64_t here = -1;
            for (int64_t j = 0; j < MEMBER_LEN(m); j++) {
                if (MEMBER_KEY(m, j) == keys[i]) {
                    here = j;
                    break;
                }
            }
            if (here < 0) { /* the key is not on its path: keys.index raises there */
                result = Py_NotImplemented;
                Py_INCREF(result);
                goto done;
            }
            if (attach[member[m]] != a || (at >= 0 && here != at)) { /* another attach node, another depth */
                result = Py_None;
                Py_INCREF(result);
                goto done;
            }
            at = here;
        }
        int64_t tok_g = 0;
        g[7 * i + 3] = chained;
        for (;; at++) {
            const int64_t key0 = at < MEMBER_LEN(lo) ? MEMBER_KEY(lo, at) : -1;
            int same = key0 >= 0;
            for (npy_intp m = lo + 1; same && m < lo + count; m++) {
                same = at < MEMBER_LEN(m) && MEMBER_KEY(m, at) == key0;
            }
            if (!same) break;
            for (npy_intp m = lo + 1; m < lo + count; m++) {
                if (MEMBER_TOKENS(m, at) != MEMBER_TOKENS(lo, at)) {
                    result = Py_None;
                    Py_INCREF(result);
                    goto done;
                }
            }
            chain_keys[chained++] = key0;
            tok_g += MEMBER_TOKENS(lo, at);
        }
        for (npy_intp m = lo; m < lo + count; m++) { /* the keys below the chain: distinct, or a second new level */
            const int64_t below = at < MEMBER_LEN(m) ? MEMBER_KEY(m, at) : -1;
            member[n + m] = below;
            for (npy_intp o = lo; below >= 0 && o < m; o++) {
                if (member[n + o] == below) {
                    result = Py_None;
                    Py_INCREF(result);
                    goto done;
                }
            }
        }
        g[7 * i] = a;
        g[7 * i + 1] = tok_g;
        g[7 * i + 2] = at - 1; /* the rank's depth: its deepest radix node's index on the paths */
        g[7 * i + 4] = chained - g[7 * i + 3];
    }
#undef MEMBER_LEN
#undef MEMBER_KEY
#undef MEMBER_TOKENS
    /* the kept nodes, old and new, in rank order (_Kept.with_nodes) */
    for (npy_intp k = 0; k < num_kept; k++) {
        PyObject *rank = PyList_GET_ITEM(ranks, k);
        if (!PyTuple_Check(rank) || PyTuple_GET_SIZE(rank) != 2) {
            result = Py_NotImplemented;
            Py_INCREF(result);
            goto done;
        }
        if (as_int64(PyTuple_GET_ITEM(rank, 0), &order[k].depth) || as_int64(PyTuple_GET_ITEM(rank, 1), &order[k].key))
            goto done;
        order[k].index = k;
    }
    for (npy_intp i = 0; i < num_groups; i++) {
        order[num_kept + i] = (RankAt){g[7 * i + 2], chain_keys[g[7 * i + 3] + g[7 * i + 4] - 1], num_kept + i};
    }
    qsort(order, (size_t)total, sizeof(RankAt), rank_order);
    int64_t *tok2 = arrays, *start2 = tok2 + total, *parent2 = start2 + total, *depth2 = parent2 + total;
    int64_t *q2 = depth2 + total, *new_id = q2 + total;
    for (npy_intp at = 0; at < total; at++) new_id[order[at].index] = at;
    deepest2 = PyList_New(total);
    ranks2 = PyList_New(total);
    tops2 = PyList_New(total);
    chain2 = PyDict_New();
    if (!deepest2 || !ranks2 || !tops2 || !chain2) goto done;
    for (npy_intp at = 0; at < total; at++) {
        const int64_t i = order[at].index;
        PyObject *d, *r, *t;
        if (i < num_kept) {
            const int64_t p = parent[i];
            tok2[at] = tok[i];
            start2[at] = start[i];
            depth2[at] = depth[i];
            parent2[at] = p < 0 ? -1 : new_id[p];
            q2[at] = q[i];
            d = PyList_GET_ITEM(deepest, i);
            r = PyList_GET_ITEM(ranks, i);
            t = PyList_GET_ITEM(tops, i);
            Py_INCREF(d);
            Py_INCREF(r);
            Py_INCREF(t);
        } else {
            const int64_t *h = g + 7 * (i - num_kept), p = h[0];
            tok2[at] = h[1];
            start2[at] = kept_end[p + 1];
            depth2[at] = p < 0 ? 0 : depth[p] + 1;
            parent2[at] = p < 0 ? -1 : new_id[p];
            q2[at] = h[6];
            d = PyLong_FromLongLong(chain_keys[h[3] + h[4] - 1]);
            r = Py_BuildValue("(LL)", (long long)h[2], (long long)chain_keys[h[3] + h[4] - 1]);
            t = PyLong_FromLongLong(chain_keys[h[3]]);
        }
        PyList_SET_ITEM(deepest2, at, d);
        PyList_SET_ITEM(ranks2, at, r);
        PyList_SET_ITEM(tops2, at, t);
        if (!d || !r || !t) goto done;
    }
    if (remap_chain(chain, num_kept, NULL, new_id, chain2) < 0) goto done; /* the old chains' keys, new indices */
    for (npy_intp i = 0; i < num_groups; i++) { /* and the new chains' */
        const int64_t *h = g + 7 * i;
        for (int64_t c = h[3]; c < h[3] + h[4]; c++) {
            PyObject *k = PyLong_FromLongLong(chain_keys[c]), *id = PyLong_FromLongLong(new_id[num_kept + i]);
            const int bad = k == NULL || id == NULL || PyDict_SetItem(chain2, k, id) < 0;
            Py_XDECREF(k);
            Py_XDECREF(id);
            if (bad) goto done;
        }
    }
    for (npy_intp r = 0; r < n; r++) attach[r] = attach[r] < 0 ? -1 : new_id[attach[r]];
    for (npy_intp i = 0; i < num_groups; i++) {
        const int64_t *h = g + 7 * i;
        for (int64_t m = h[5]; m < h[5] + h[6]; m++) {
            attach[member[m]] = new_id[num_kept + i];
            first[member[m]] = member[n + m];
        }
    }
    result = dissolved(total, tok2, start2, parent2, depth2, q2, chain2, deepest2, tops2, ranks2, n, attach, first);
done:
    Py_XDECREF(chain2);
    Py_XDECREF(deepest2);
    Py_XDECREF(ranks2);
    Py_XDECREF(tops2);
    PyMem_Free(g);
    PyMem_Free(member);
    PyMem_Free(arrays);
    PyMem_Free(order);
    PyMem_Free(path_keys);
    PyMem_Free(path_lens);
    PyMem_Free(path_at);
    PyMem_Free(chain_keys);
    if (sigs != NULL) {
        for (npy_intp m = 0; m < members; m++) Py_XDECREF(sigs[m]);
        PyMem_Free(sigs);
    }
    return result;
}

/* edit_common(old_of, joiners, leavers, entries, old_attach, old_first, kept, width, chain, deepest, q, seq, top,
   rank): forest_edit.RadixIndex.edit after its survivors (old_of, joiners, leavers from forest_edit.survivors, the
   order and joiner count already checked) in one call: the leavers' kept nodes lose them, each joiner is placed
   (RadixIndex._place), every request's attach node and first private key set (RadixIndex._places); requests that
   come to share a radix node beyond their attach node make a kept node (with_new_nodes), kept nodes left with one
   request dissolve (dissolved). Returns (the forest's arrays as edit_forest's dict where the kept nodes did not
   change, _Kept.make's arguments for the new ones where some were made or dissolved, None where they change only by
   a kept node having all of its parent's requests; attach; first private keys; the kept nodes' member counts as a
   list; whether some kept node has all of its parent's requests): RadixIndex.edit then fuses such nodes into their
   parents (_Kept.fused) and makes the forest. None where the edit is refused (a joiner not on whole kept chains,
   paths that disagree on a new kept node, a second new level, an empty leaf, counts that do not add up);
   NotImplemented where the arguments are not of that shape (the Python edit then starts again from its survivors).
   old_attach / old_first: the index's per request (padding included); kept, width, chain, deepest, top, rank: the
   index's _Kept; seq: per request of the new batch, padding included (its first len(old_of) are the real requests,
   entries' length). */
static PyObject *edit_common(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (!takes("edit_common", nargs, 14)) return NULL;
    PyArrayObject *old_of = vec(args[0], NPY_INT64, -1), *old_attach = vec(args[4], NPY_INT64, -1);
    PyArrayObject *kept = vec(args[6], NPY_INT64, -1), *seq = vec(args[11], NPY_INT64, -1);
    PyObject *joiners = args[1], *leavers = args[2], *entries = args[3], *chain = args[8], *deepest = args[9];
    PyObject *kept_q = args[10], *tops = args[12], *ranks = args[13];
    int64_t width;
    if (!old_of || !old_attach || !kept || !seq || !PyList_Check(joiners) || !PyList_Check(leavers) ||
        !PyTuple_Check(entries) || !PyDict_Check(chain) || !PyList_Check(deepest) || !PyList_Check(kept_q) ||
        !PyList_Check(tops) || !PyList_Check(ranks))
        Py_RETURN_NOTIMPLEMENTED;
    if (as_int64(args[7], &width)) return NULL;
    const npy_intp n_real = PyArray_DIM(old_of, 0), n = PyArray_DIM(seq, 0), num_old = PyArray_DIM(old_attach, 0);
    const npy_intp num_kept = PyList_GET_SIZE(kept_q);
    PyArrayObject *old_first = vec(args[5], NPY_INT64, num_old);
    if (!old_first || !kept_fits(kept, num_kept, width) || PyList_GET_SIZE(deepest) != num_kept ||
        PyList_GET_SIZE(tops) != num_kept || PyList_GET_SIZE(ranks) != num_kept || PyTuple_GET_SIZE(entries) != n_real ||
        n < n_real || n < 1)
        Py_RETURN_NOTIMPLEMENTED;
    const int64_t *packed = PyArray_DATA(kept), *parent = packed + 2 * num_kept, *kept_end = packed + 4 * num_kept;
    const int64_t *num_anc = kept_end + num_kept + 1, *anc = num_anc + num_kept + 1;
    const int64_t *olds = PyArray_DATA(old_of), *old_a = PyArray_DATA(old_attach), *old_f = PyArray_DATA(old_first);
    const Py_ssize_t num_joiners = PyList_GET_SIZE(joiners);
    PyObject *counts = fresh(num_kept, NPY_INT64, 0), *attach_arr = fresh(n, NPY_INT64, 0);
    PyObject *first_arr = fresh(n, NPY_INT64, 0), *result = NULL, *forest = NULL, *q_list = NULL;
    int64_t *placed = PyMem_Malloc(sizeof(int64_t) * (size_t)(3 * num_joiners + 1)); /* then the group keys */
    if (!counts || !attach_arr || !first_arr || !placed) {
        if (placed == NULL) PyErr_NoMemory();
        goto done;
    }
    int64_t *group_keys = placed + 2 * num_joiners;
    int64_t *q = PyArray_DATA((PyArrayObject *)counts), *attach = PyArray_DATA((PyArrayObject *)attach_arr);
    int64_t *first = PyArray_DATA((PyArrayObject *)first_arr);
    for (npy_intp k = 0; k < num_kept; k++) {
        if (as_int64(PyList_GET_ITEM(kept_q, k), &q[k])) goto done;
    }
#define ANSWER(obj)          \
    do {                     \
        result = (obj);      \
        Py_INCREF(result);   \
        goto done;           \
    } while (0)
#define NOT_TAKEN() ANSWER(Py_NotImplemented) /* the Python edit decides */
#define REFUSED() ANSWER(Py_None)
    /* the leavers' kept nodes lose them */
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(leavers); i++) {
        int64_t old;
        if (as_int64(PyList_GET_ITEM(leavers, i), &old)) goto done;
        if (old < 0 || old >= num_old) NOT_TAKEN();
        const int64_t row = old_a[old] + 1;
        if (row < 0 || row > num_kept) NOT_TAKEN();
        for (int64_t j = 0; j < num_anc[row]; j++) q[anc[row * width + j]]--;
    }
    /* the joiners placed, their kept nodes gain them */
    for (Py_ssize_t i = 0; i < num_joiners; i++) {
        int64_t j;
        if (as_int64(PyList_GET_ITEM(joiners, i), &j)) goto done;
        if (j < 0 || j >= n_real) NOT_TAKEN();
        const int got = place_joiner(PyTuple_GET_ITEM(entries, j), chain, deepest, parent, kept_end, num_kept,
                                     &placed[2 * i], &placed[2 * i + 1]);
        if (got < 0) NOT_TAKEN();
        if (got == 0) REFUSED();
        const int64_t row = placed[2 * i] + 1;
        for (int64_t a = 0; a < num_anc[row]; a++) q[anc[row * width + a]]++;
    }
    /* every request's attach node and first private key */
    for (npy_intp r = 0; r < n; r++) {
        const int64_t k = r < n_real ? olds[r] : -1;
        if (k >= num_old) NOT_TAKEN();
        attach[r] = k >= 0 ? old_a[k] : -1;
        first[r] = k >= 0 ? old_f[k] : -1;
    }
    for (Py_ssize_t i = 0; i < num_joiners; i++) {
        const int64_t j = PyLong_AsLongLong(PyList_GET_ITEM(joiners, i)); /* read and checked above */
        attach[j] = placed[2 * i];
        first[j] = placed[2 * i + 1];
    }
    /* a joiner's first private key another request has: a new kept node (groups), keys ascending */
    npy_intp num_groups = 0;
    for (int64_t key = pat_next_joiner_key(placed, num_joiners, -1); key >= 0;
         key = pat_next_joiner_key(placed, num_joiners, key)) {
        npy_intp count = 0;
        for (npy_intp r = 0; r < n && count < 2; r++) count += first[r] == key;
        if (count > 1) group_keys[num_groups++] = key;
    }
    npy_intp num_gone = 0;
    for (npy_intp k = 0; k < num_kept; k++) num_gone += q[k] < 2;
    if (num_groups || num_gone) {
        /* the kept nodes change: new ones made (then those left with one request dissolved, as RadixIndex.edit's
           `gone` block after _shared), or only dissolved (_Kept.without) */
        PyObject *got = num_groups
                            ? with_new_nodes(num_kept, packed, q, chain, deepest, tops, ranks, entries, n_real, n,
                                             attach, first, group_keys, num_groups)
                            : dissolved(num_kept, packed, packed + num_kept, parent, packed + 3 * num_kept, q, chain,
                                        deepest, tops, ranks, n, attach, first);
        if (got == NULL || got == Py_None || got == Py_NotImplemented) {
            result = got;
            goto done;
        }
        result = PyTuple_Pack(5, PyTuple_GET_ITEM(got, 0), attach_arr, first_arr, PyTuple_GET_ITEM(got, 1),
                              PyTuple_GET_ITEM(got, 2));
        Py_DECREF(got);
        goto done;
    }
    int fuses = 0;
    for (npy_intp k = 0; k < num_kept && !fuses; k++) { /* a kept node with all of its parent's requests */
        fuses = parent[k] >= 0 && q[k] >= q[parent[k]];
    }
#undef NOT_TAKEN
#undef REFUSED
#undef ANSWER
    if (fuses) { /* the kept nodes change only by fusing: None for the forest, RadixIndex.edit fuses (_Kept.fused) */
        forest = Py_None;
        Py_INCREF(forest);
    } else {
        forest = forest_arrays(kept, width, q, num_kept, (PyArrayObject *)attach_arr, seq);
        if (forest == NULL) goto done;
        if (forest == Py_None) {
            result = forest;
            forest = NULL;
            goto done;
        }
    }
    q_list = PyList_New(num_kept);
    if (q_list == NULL) goto done;
    for (npy_intp k = 0; k < num_kept; k++) {
        PyObject *v = PyLong_FromLongLong(q[k]);
        if (v == NULL) goto done;
        PyList_SET_ITEM(q_list, k, v);
    }
    result = PyTuple_Pack(5, forest, attach_arr, first_arr, q_list, fuses ? Py_True : Py_False);
done:
    PyMem_Free(placed);
    Py_XDECREF(forest);
    Py_XDECREF(q_list);
    Py_XDECREF(counts);
    Py_XDECREF(attach_arr);
    Py_XDECREF(first_arr);
    return result;
}

/* The publisher's pieces (host_batch.c, built into this module too): the same functions the ctypes.PyDLL library
   exports (host_core._HostBatch), called here as METH_FASTCALL functions (~0.2 us a call where a PyDLL call of
   py_object arguments costs ~1.2 us warm on the project's 2-core VM, more run cold between two decode steps; a changed
   decode step makes four to six of them). */
PyObject *pat_pick_batch(PyObject *rows_obj, PyObject *row_entry, PyObject *row_rid, PyObject *before_obj,
                         PyObject *mark_obj, int64_t stamp);
PyObject *pat_survivors(PyObject *entries, PyObject *old_entries, PyObject *rows_obj, PyObject *old_rows_obj,
                        PyObject *table_obj, PyObject *old_of_obj);
PyObject *pat_chain_signatures(PyObject *nodes, PyObject *root, PyObject *memo);
PyObject *pat_wave_entries(PyObject *changed, PyObject *cls, PyObject *keys_obj, PyObject *lengths_obj,
                           PyObject *depths_obj, PyObject *starts_obj, PyObject *cached_obj);
PyObject *pat_set_wave(PyObject *entries, PyObject *row_entry, PyObject *rows_of_node, PyObject *rows,
                       PyObject *made);
PyObject *pat_tally_refs(PyObject *req_obj, PyObject *keys_obj, PyObject *tokens_obj);
PyObject *pat_publish_read(PyObject *table, PyObject *reqs, PyObject *rows_obj, PyObject *gens_obj, PyObject *root,
                           PyObject *moved, PyObject *recached, PyObject *cls, int64_t wave);
PyObject *pat_tally_changes(PyObject *tally, PyObject *left, PyObject *touched, PyObject *entries);

static PyObject *pick_batch(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    int64_t stamp;
    if (!takes("pick_batch", nargs, 6) || as_int64(args[5], &stamp)) return NULL;
    return pat_pick_batch(args[0], args[1], args[2], args[3], args[4], stamp);
}

static PyObject *survivors(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (!takes("survivors", nargs, 6)) return NULL;
    return pat_survivors(args[0], args[1], args[2], args[3], args[4], args[5]);
}

static PyObject *chain_signatures(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (!takes("chain_signatures", nargs, 3)) return NULL;
    return pat_chain_signatures(args[0], args[1], args[2]);
}

static PyObject *wave_entries(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (!takes("wave_entries", nargs, 7)) return NULL;
    return pat_wave_entries(args[0], args[1], args[2], args[3], args[4], args[5], args[6]);
}

static PyObject *set_wave(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (!takes("set_wave", nargs, 5)) return NULL;
    return pat_set_wave(args[0], args[1], args[2], args[3], args[4]);
}

static PyObject *tally_refs(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (!takes("tally_refs", nargs, 3)) return NULL;
    return pat_tally_refs(args[0], args[1], args[2]);
}

static PyObject *publish_read(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    int64_t wave;
    if (!takes("publish_read", nargs, 9) || as_int64(args[8], &wave)) return NULL;
    return pat_publish_read(args[0], args[1], args[2], args[3], args[4], args[5], args[6], args[7], wave);
}

static PyObject *tally_changes(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (!takes("tally_changes", nargs, 4)) return NULL;
    return pat_tally_changes(args[0], args[1], args[2], args[3]);
}

static PyObject *forest_from_paths(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (!takes("forest_from_paths", nargs, 5)) return NULL;
    PyArrayObject *req = vec(args[0], NPY_INT64, -1);
    const npy_intp n = req != NULL ? PyArray_DIM(req, 0) : 0;
    PyArrayObject *key = vec(args[1], NPY_INT64, n), *len = vec(args[2], NPY_INT64, n);
    PyArrayObject *seq = vec(args[3], NPY_INT64, -1);
    const int index = PyObject_IsTrue(args[4]);
    if (index < 0) return NULL;
    if (!req || !key || !len || !seq) Py_RETURN_NOTIMPLEMENTED; /* the numpy version takes any integer arrays */
    const npy_intp n_req = PyArray_DIM(seq, 0), N = n + n_req;
    int64_t *work = PyMem_Malloc(sizeof(int64_t) * (size_t)(16 * n + 4 * n_req + 2));
    if (work == NULL) return PyErr_NoMemory();
    PyObject *buf = fresh(6 * N + 1 + 4 * n + n_req, NPY_INT64, 0), *result = NULL, *radix = NULL;
    PyObject *parts[11] = {NULL};
    int64_t shape[4];
    if (buf == NULL) goto done;
    if (pat_forest_from_paths(n_req, PyArray_DATA(seq), n, PyArray_DATA(req), PyArray_DATA(key), PyArray_DATA(len),
                              index, work, PyArray_DATA((PyArrayObject *)buf), shape) != 0) {
        Py_INCREF(Py_None); /* numpy's all-private forest, or its error */
        result = Py_None;
        goto done;
    }
    const npy_intp nodes = shape[0] + shape[1];
    for (int k = 0; k < 4; k++) parts[k] = view(buf, 8 * k * N, nodes, NPY_INT64); /* tok, start, parent, depth */
    parts[4] = view(buf, 8 * 4 * N, nodes + 1, NPY_INT64);                          /* req_ptr */
    parts[5] = view(buf, 8 * (5 * N + 1), shape[3], NPY_INT64);                     /* req_flat */
    for (int k = 0; k < 6; k++)
        if (parts[k] == NULL) goto done;
    if (shape[2] >= 0) {
        const npy_intp at = 6 * N + 1;
        parts[6] = view(buf, 8 * at, shape[2], NPY_INT64);               /* shared nodes' keys */
        parts[7] = view(buf, 8 * (at + n), shape[2], NPY_INT64);         /* their chains' kept nodes */
        parts[8] = view(buf, 8 * (at + 2 * n), shape[0], NPY_INT64);     /* kept nodes' keys */
        parts[9] = view(buf, 8 * (at + 3 * n), shape[0], NPY_INT64);     /* kept nodes' path depths */
        parts[10] = view(buf, 8 * (at + 4 * n), n_req, NPY_INT64);       /* first private key per request */
        for (int k = 6; k < 11; k++)
            if (parts[k] == NULL) goto done;
        radix = PyTuple_Pack(5, parts[6], parts[7], parts[8], parts[9], parts[10]);
        if (radix == NULL) goto done;
    } else {
        Py_INCREF(Py_None);
        radix = Py_None;
    }
    result = PyTuple_Pack(7, parts[0], parts[1], parts[2], parts[3], parts[4], parts[5], radix);
done:
    PyMem_Free(work);
    Py_XDECREF(buf);
    Py_XDECREF(radix);
    for (int k = 0; k < 11; k++) Py_XDECREF(parts[k]);
    return result;
}

static PyObject *remade_items(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (!takes("remade_items", nargs, 18)) return NULL;
    if (!PyArray_Check(args[0])) Py_RETURN_NOTIMPLEMENTED;
    PyArrayObject *prev = (PyArrayObject *)args[0];
    if (PyArray_NDIM(prev) != 2 || PyArray_DIM(prev, 1) != ITEM_FIELDS || PyArray_TYPE(prev) != NPY_INT32 ||
        !PyArray_IS_C_CONTIGUOUS(prev))
        Py_RETURN_NOTIMPLEMENTED;
    PyArrayObject *prev_req = vec(args[1], NPY_INT32, -1);
    PyArrayObject *prev_dst = vec(args[2], NPY_INT32, prev_req ? PyArray_DIM(prev_req, 0) : -1);
    PyArrayObject *old_index = vec(args[5], NPY_INT64, -1);
    const npy_intp n = old_index ? PyArray_DIM(old_index, 0) : 0;
    PyArrayObject *rows = vec(args[6], NPY_INT64, n), *seq = vec(args[7], NPY_INT64, n);
    PyArrayObject *tile = vec(args[10], NPY_INT64, -1);
    PyArrayObject *tile_m = vec(args[11], NPY_INT64, tile ? PyArray_DIM(tile, 0) : -1);
    if (!prev_req || !prev_dst || !old_index || !rows || !seq || !tile || !tile_m) Py_RETURN_NOTIMPLEMENTED;
    int64_t prev_requests, prev_partials, stride, split, long_tokens, lo, hi, max_items, max_partials, max_entries;
    if (as_int64(args[3], &prev_requests) || as_int64(args[4], &prev_partials) || as_int64(args[8], &stride) ||
        as_int64(args[9], &split) || as_int64(args[12], &long_tokens) || as_int64(args[13], &lo) ||
        as_int64(args[14], &hi) || as_int64(args[15], &max_items) || as_int64(args[16], &max_partials) ||
        as_int64(args[17], &max_entries))
        return NULL;
    if (prev_requests < 0 || prev_partials < 0 || split < 1) Py_RETURN_NOTIMPLEMENTED;
    /* the joiners' items: ceil(length / split) each */
    const int64_t *oi = PyArray_DATA(old_index), *sq = PyArray_DATA(seq);
    int64_t joined = 0;
    for (npy_intp r = 0; r < n; r++) {
        if (sq[r] < 1) Py_RETURN_NOTIMPLEMENTED;
        if (oi[r] < 0) joined += (sq[r] + split - 1) / split;
    }
    const npy_intp prev_n = PyArray_DIM(prev, 0), prev_e = PyArray_DIM(prev_req, 0);
    const npy_intp num_items = prev_n + joined, num_entries = prev_e + joined;
    const size_t work_n = (size_t)(3 * prev_e + 3 * prev_n + prev_requests + prev_partials + 3 * n + 2 + 8 * joined);
    int64_t *work = PyMem_Malloc(sizeof(int64_t) * work_n);
    if (work == NULL) return PyErr_NoMemory();
    npy_intp dims[2] = {num_items > 0 ? num_items : 1, ITEM_FIELDS};
    PyObject *items = PyArray_EMPTY(2, dims, NPY_INT32, 0);
    /* item_req, item_dst, merge_indptr, merge_partials: one buffer */
    PyObject *ints = items ? fresh(3 * num_entries + n + 1, NPY_INT32, 0) : NULL;
    PyObject *result = NULL, *parts[5] = {NULL};
    int64_t summary[5];
    if (ints == NULL) goto done;
    int32_t *i32 = (int32_t *)PyArray_DATA((PyArrayObject *)ints);
    const int64_t got = pat_remade_plan(
        prev_n, PyArray_DATA(prev), prev_e, PyArray_DATA(prev_req), PyArray_DATA(prev_dst), prev_requests,
        prev_partials, n, oi, PyArray_DATA(rows), sq, stride, split, PyArray_DIM(tile, 0), PyArray_DATA(tile),
        PyArray_DATA(tile_m), long_tokens, lo, hi, max_items, max_partials, max_entries, work,
        (int32_t *)PyArray_DATA((PyArrayObject *)items), i32, i32 + num_entries, i32 + 2 * num_entries,
        i32 + 2 * num_entries + n + 1, summary);
    if (got == -1) {
        Py_INCREF(Py_None);
        result = Py_None;
        goto done;
    }
    if (got < 0) {
        Py_INCREF(Py_NotImplemented);
        result = Py_NotImplemented;
        goto done;
    }
    npy_intp shape[2] = {summary[0], ITEM_FIELDS};
    parts[0] = view_nd(items, 0, 2, shape, NPY_INT32);
    parts[1] = view(ints, 0, summary[1], NPY_INT32);
    parts[2] = view(ints, 4 * num_entries, summary[1], NPY_INT32);
    parts[3] = view(ints, 4 * 2 * num_entries, n + 1, NPY_INT32);
    parts[4] = view(ints, 4 * (2 * num_entries + n + 1), summary[2] ? i32[2 * num_entries + n] : 0, NPY_INT32);
    for (int k = 0; k < 5; k++)
        if (parts[k] == NULL) goto done;
    result = Py_BuildValue("(OOOOOLLL)", parts[0], parts[1], parts[2], parts[3], parts[4], (long long)summary[2],
                           (long long)summary[3], (long long)summary[4]);
done:
    PyMem_Free(work);
    Py_XDECREF(items);
    Py_XDECREF(ints);
    for (int k = 0; k < 5; k++) Py_XDECREF(parts[k]);
    return result;
}

static PyObject *edit_places(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (!takes("edit_places", nargs, 6)) return NULL;
    PyArrayObject *old_of = vec(args[0], NPY_INT64, -1), *old_attach = vec(args[1], NPY_INT64, -1);
    PyArrayObject *old_first = vec(args[2], NPY_INT64, old_attach ? PyArray_DIM(old_attach, 0) : -1);
    if (!old_of || !old_attach || !old_first) {
        PyErr_SetString(PyExc_ValueError, "edit_places: C-contiguous int64 arrays, one old attach node and key per "
                                          "old request");
        return NULL;
    }
    PyObject *joiners = args[3], *placed = args[4];
    int64_t n;
    if (as_int64(args[5], &n)) return NULL;
    if (!PyList_Check(joiners) || !PyList_Check(placed) || PyList_GET_SIZE(placed) != PyList_GET_SIZE(joiners) ||
        n < 0) {
        PyErr_SetString(PyExc_ValueError, "edit_places: joiners and placed: lists of one length; n >= 0");
        return NULL;
    }
    const Py_ssize_t num = PyList_GET_SIZE(joiners);
    /* the joiners, their (attach, key) pairs, then attach, first and groups: one buffer, as the ctypes version's */
    PyObject *buf = fresh(3 * num + 3 * n + 2 * num, NPY_INT64, 0), *result = NULL;
    PyObject *attach = NULL, *first = NULL, *groups = NULL;
    if (buf == NULL) return NULL;
    int64_t *ints = (int64_t *)PyArray_DATA((PyArrayObject *)buf), *out = ints + 3 * num;
    for (Py_ssize_t i = 0; i < num; i++) {
        PyObject *pair = PyList_GET_ITEM(placed, i);
        if (as_int64(PyList_GET_ITEM(joiners, i), &ints[i])) goto done;
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_SetString(PyExc_ValueError, "edit_places: placed holds (attach node, key) pairs");
            goto done;
        }
        if (as_int64(PyTuple_GET_ITEM(pair, 0), &ints[num + 2 * i]) ||
            as_int64(PyTuple_GET_ITEM(pair, 1), &ints[num + 2 * i + 1]))
            goto done;
    }
    int64_t got = pat_edit_places(PyArray_DIM(old_of, 0), n, PyArray_DATA(old_of), PyArray_DIM(old_attach, 0),
                                  PyArray_DATA(old_attach), PyArray_DATA(old_first), num, ints, ints + num, out,
                                  out + n, out + 2 * n);
    if (got < 0) {
        PyErr_SetString(PyExc_ValueError, "edit_places: an old index or a joiner outside the batches");
        goto done;
    }
    groups = PyDict_New();
    if (groups == NULL) goto done;
    const int64_t *flat = out + 2 * n;
    for (int64_t i = 0; i < got; i += 2 + flat[i + 1]) {
        PyObject *members = PyList_New((Py_ssize_t)flat[i + 1]), *key = NULL;
        if (members == NULL) goto done;
        for (int64_t k = 0; k < flat[i + 1]; k++) {
            PyObject *r = PyLong_FromLongLong(flat[i + 2 + k]);
            if (r == NULL) {
                Py_DECREF(members);
                goto done;
            }
            PyList_SET_ITEM(members, k, r);
        }
        key = PyLong_FromLongLong(flat[i]);
        if (key == NULL || PyDict_SetItem(groups, key, members) < 0) {
            Py_XDECREF(key);
            Py_DECREF(members);
            goto done;
        }
        Py_DECREF(key);
        Py_DECREF(members);
    }
    attach = view(buf, 8 * 3 * num, n, NPY_INT64);
    first = view(buf, 8 * (3 * num + n), n, NPY_INT64);
    if (attach && first) result = PyTuple_Pack(3, attach, first, groups);
done:
    Py_XDECREF(attach);
    Py_XDECREF(first);
    Py_XDECREF(groups);
    Py_DECREF(buf);
    return result;
}

/* A fresh read-only int64 array of table[rows[i]] (NULL with IndexError where a row is outside the table) */
static PyObject *gather(const int64_t *rows, npy_intp n, PyArrayObject *table) {
    const int64_t *t = (const int64_t *)PyArray_DATA(table);
    const npy_intp len = PyArray_DIM(table, 0);
    PyObject *out = fresh(n, NPY_INT64, 0);
    if (out == NULL) return NULL;
    int64_t *o = (int64_t *)PyArray_DATA((PyArrayObject *)out);
    for (npy_intp i = 0; i < n; i++) {
        if (rows[i] < 0 || rows[i] >= len) {
            Py_DECREF(out);
            PyErr_SetString(PyExc_IndexError, "a row outside the table");
            return NULL;
        }
        o[i] = t[rows[i]];
    }
    PyArray_CLEARFLAGS((PyArrayObject *)out, NPY_ARRAY_WRITEABLE);
    return out;
}

/* gens_at(rows, table): the generations of a decode batch's rows (sglang_patches/publish.py): table[rows] as a fresh
   read-only int64 array; None where a row is negative (or there are none); IndexError where one is past the table;
   NotImplemented for arrays other than C-contiguous 1-D int64 (the caller's numpy then). */
static PyObject *gens_at(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (!takes("gens_at", nargs, 2)) return NULL;
    PyArrayObject *rows = vec(args[0], NPY_INT64, -1), *table = vec(args[1], NPY_INT64, -1);
    if (!rows || !table) Py_RETURN_NOTIMPLEMENTED;
    const npy_intp n = PyArray_DIM(rows, 0);
    const int64_t *r = (const int64_t *)PyArray_DATA(rows);
    for (npy_intp i = 0; i < n; i++)
        if (r[i] < 0) Py_RETURN_NONE;
    if (n == 0) Py_RETURN_NONE;
    return gather(r, n, table);
}

/* rows_to_read(rows, gens, row_gen): the positions i of a changed batch whose row was last read for another generation
   (row_gen[rows[i]] != gens[i]: chain_table.ChainTable.publish_rows), with their rows and generations: three lists.
   IndexError where a row is outside row_gen; NotImplemented for arrays other than C-contiguous 1-D int64 (gens as
   long as rows). */
static PyObject *rows_to_read(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (!takes("rows_to_read", nargs, 3)) return NULL;
    PyArrayObject *rows = vec(args[0], NPY_INT64, -1);
    PyArrayObject *gens = vec(args[1], NPY_INT64, rows ? PyArray_DIM(rows, 0) : -1);
    PyArrayObject *row_gen = vec(args[2], NPY_INT64, -1);
    if (!rows || !gens || !row_gen) Py_RETURN_NOTIMPLEMENTED;
    const npy_intp n = PyArray_DIM(rows, 0), len = PyArray_DIM(row_gen, 0);
    const int64_t *r = (const int64_t *)PyArray_DATA(rows), *g = (const int64_t *)PyArray_DATA(gens);
    const int64_t *last = (const int64_t *)PyArray_DATA(row_gen);
    PyObject *pos = PyList_New(0), *at = PyList_New(0), *gl = PyList_New(0);
    if (!pos || !at || !gl) goto fail;
    for (npy_intp i = 0; i < n; i++) {
        if (r[i] < 0 || r[i] >= len) {
            PyErr_SetString(PyExc_IndexError, "rows_to_read: a row outside the table");
            goto fail;
        }
        if (last[r[i]] == g[i]) continue;
        PyObject *v[3] = {PyLong_FromSsize_t(i), PyLong_FromLongLong(r[i]), PyLong_FromLongLong(g[i])};
        int bad = !v[0] || !v[1] || !v[2] || PyList_Append(pos, v[0]) || PyList_Append(at, v[1]) ||
                  PyList_Append(gl, v[2]);
        Py_XDECREF(v[0]);
        Py_XDECREF(v[1]);
        Py_XDECREF(v[2]);
        if (bad) goto fail;
    }
    PyObject *out = PyTuple_Pack(3, pos, at, gl);
    Py_DECREF(pos);
    Py_DECREF(at);
    Py_DECREF(gl);
    return out;
fail:
    Py_XDECREF(pos);
    Py_XDECREF(at);
    Py_XDECREF(gl);
    return NULL;
}

/* batch_arrays(rows, gens, cached): a published batch's arrays (chain_table.ChainTable.publish_rows): read-only
   copies of rows and gens and the gather cached[rows], fresh int64 arrays. IndexError where a row is outside cached;
   NotImplemented for arrays other than C-contiguous 1-D int64 (gens as long as rows). */
static PyObject *batch_arrays(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (!takes("batch_arrays", nargs, 3)) return NULL;
    PyArrayObject *rows = vec(args[0], NPY_INT64, -1);
    PyArrayObject *gens = vec(args[1], NPY_INT64, rows ? PyArray_DIM(rows, 0) : -1);
    PyArrayObject *cached = vec(args[2], NPY_INT64, -1);
    if (!rows || !gens || !cached) Py_RETURN_NOTIMPLEMENTED;
    const npy_intp n = PyArray_DIM(rows, 0);
    PyObject *got = gather((const int64_t *)PyArray_DATA(rows), n, cached);
    if (got == NULL) return NULL;
    PyObject *r = fresh(n, NPY_INT64, 0), *g = r ? fresh(n, NPY_INT64, 0) : NULL;
    if (g == NULL) {
        Py_XDECREF(r);
        Py_DECREF(got);
        return NULL;
    }
    memcpy(PyArray_DATA((PyArrayObject *)r), PyArray_DATA(rows), (size_t)n * sizeof(int64_t));
    memcpy(PyArray_DATA((PyArrayObject *)g), PyArray_DATA(gens), (size_t)n * sizeof(int64_t));
    PyArray_CLEARFLAGS((PyArrayObject *)r, NPY_ARRAY_WRITEABLE);
    PyArray_CLEARFLAGS((PyArrayObject *)g, NPY_ARRAY_WRITEABLE);
    PyObject *out = PyTuple_Pack(3, r, g, got);
    Py_DECREF(r);
    Py_DECREF(g);
    Py_DECREF(got);
    return out;
}

/* The int64 at tuple position `at` of the signature item `item` (a tuple), or -1 with *bad set where it is not one */
static int64_t item_int(PyObject *item, Py_ssize_t at, int *bad) {
    if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 3) {
        *bad = 1;
        return -1;
    }
    PyObject *v = PyTuple_GET_ITEM(item, at);
    if (!PyLong_Check(v)) {
        *bad = 1;
        return -1;
    }
    int overflow = 0;
    const long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow || (x == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        *bad = 1;
        return -1;
    }
    return (int64_t)x;
}

/* write_paths(keys, lengths, rows, sigs): chain_table._RowPaths.flush's writes. For each i, row rows[i] of the 2-D
   C-contiguous int64 tables keys and lengths gets the node ids and tokens of sigs[i] (a tuple of (node id, data
   pointer, tokens) tuples of ints, the request's last node first) root first: keys[row, j] = sigs[i][d - 1 - j][0],
   lengths[row, j] = ...[2]. Everything is checked before anything is written (rows within the tables, signatures no
   deeper than their width, every item a 3-tuple of ints): else NotImplemented and nothing written, and the numpy
   version runs. None when written. */
static PyObject *write_paths(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (!takes("write_paths", nargs, 4)) return NULL;
    if (!PyArray_Check(args[0]) || !PyArray_Check(args[1]) || !PyList_Check(args[3])) Py_RETURN_NOTIMPLEMENTED;
    PyArrayObject *keys = (PyArrayObject *)args[0], *lengths = (PyArrayObject *)args[1];
    PyObject *sigs = args[3];
    const Py_ssize_t n = PyList_GET_SIZE(sigs);
    PyArrayObject *rows = vec(args[2], NPY_INT64, n);
    if (rows == NULL || PyArray_NDIM(keys) != 2 || PyArray_NDIM(lengths) != 2 || PyArray_TYPE(keys) != NPY_INT64 ||
        PyArray_TYPE(lengths) != NPY_INT64 || !PyArray_IS_C_CONTIGUOUS(keys) || !PyArray_IS_C_CONTIGUOUS(lengths) ||
        !PyArray_ISWRITEABLE(keys) || !PyArray_ISWRITEABLE(lengths) ||
        PyArray_DIM(keys, 0) != PyArray_DIM(lengths, 0) || PyArray_DIM(keys, 1) != PyArray_DIM(lengths, 1))
        Py_RETURN_NOTIMPLEMENTED;
    const npy_intp height = PyArray_DIM(keys, 0), width = PyArray_DIM(keys, 1);
    const int64_t *row = (const int64_t *)PyArray_DATA(rows);
    int bad = 0;
    for (Py_ssize_t i = 0; i < n && !bad; i++) {
        PyObject *sig = PyList_GET_ITEM(sigs, i);
        if (!PyTuple_Check(sig) || row[i] < 0 || row[i] >= height || PyTuple_GET_SIZE(sig) > width) {
            bad = 1;
            break;
        }
        for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(sig) && !bad; j++) {
            PyObject *item = PyTuple_GET_ITEM(sig, j);
            item_int(item, 0, &bad);
            item_int(item, 2, &bad);
        }
    }
    if (bad) Py_RETURN_NOTIMPLEMENTED;
    int64_t *k = (int64_t *)PyArray_DATA(keys), *l = (int64_t *)PyArray_DATA(lengths);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *sig = PyList_GET_ITEM(sigs, i);
        const Py_ssize_t d = PyTuple_GET_SIZE(sig);
        int64_t *kr = k + row[i] * width, *lr = l + row[i] * width;
        for (Py_ssize_t j = 0; j < d; j++) {
            PyObject *item = PyTuple_GET_ITEM(sig, d - 1 - j);
            kr[j] = item_int(item, 0, &bad);
            lr[j] = item_int(item, 2, &bad);
        }
    }
    Py_RETURN_NONE;
}

/* gather_paths(keys, lengths, depth, rows): chain_table._RowPaths.paths after its flush: the flat radix paths of the
   batch `rows` (int64, each within the tables) from the row tables keys / lengths (2-D C-contiguous int64) and the
   rows' depths (int64, one per table row, each within the tables' width): (request index, node id, tokens) per entry,
   requests in batch order, each root first, three fresh read-only int64 arrays; NotImplemented for what it does not
   take (numpy's fancy indexing answers those). */
static PyObject *gather_paths(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (!takes("gather_paths", nargs, 4)) return NULL;
    if (!PyArray_Check(args[0]) || !PyArray_Check(args[1])) Py_RETURN_NOTIMPLEMENTED;
    PyArrayObject *keys = (PyArrayObject *)args[0], *lengths = (PyArrayObject *)args[1];
    if (PyArray_NDIM(keys) != 2 || PyArray_NDIM(lengths) != 2 || PyArray_TYPE(keys) != NPY_INT64 ||
        PyArray_TYPE(lengths) != NPY_INT64 || !PyArray_IS_C_CONTIGUOUS(keys) || !PyArray_IS_C_CONTIGUOUS(lengths) ||
        PyArray_DIM(keys, 0) != PyArray_DIM(lengths, 0) || PyArray_DIM(keys, 1) != PyArray_DIM(lengths, 1))
        Py_RETURN_NOTIMPLEMENTED;
    const npy_intp height = PyArray_DIM(keys, 0), width = PyArray_DIM(keys, 1);
    PyArrayObject *depth = vec(args[2], NPY_INT64, height), *rows = vec(args[3], NPY_INT64, -1);
    if (!depth || !rows) Py_RETURN_NOTIMPLEMENTED;
    const npy_intp n = PyArray_DIM(rows, 0);
    const int64_t *row = PyArray_DATA(rows), *dep = PyArray_DATA(depth);
    npy_intp total = 0;
    for (npy_intp i = 0; i < n; i++) {
        if (row[i] < 0 || row[i] >= height || dep[row[i]] < 0 || dep[row[i]] > width) Py_RETURN_NOTIMPLEMENTED;
        total += dep[row[i]];
    }
    PyObject *out[3] = {fresh(total, NPY_INT64, 0), fresh(total, NPY_INT64, 0), fresh(total, NPY_INT64, 0)};
    if (!out[0] || !out[1] || !out[2]) {
        for (int k = 0; k < 3; k++) Py_XDECREF(out[k]);
        return NULL;
    }
    int64_t *req = PyArray_DATA((PyArrayObject *)out[0]), *key = PyArray_DATA((PyArrayObject *)out[1]);
    int64_t *len = PyArray_DATA((PyArrayObject *)out[2]);
    const int64_t *k = PyArray_DATA(keys), *l = PyArray_DATA(lengths);
    npy_intp at = 0;
    for (npy_intp i = 0; i < n; i++) {
        const int64_t d = dep[row[i]];
        memcpy(key + at, k + row[i] * width, sizeof(int64_t) * (size_t)d);
        memcpy(len + at, l + row[i] * width, sizeof(int64_t) * (size_t)d);
        for (int64_t j = 0; j < d; j++) req[at + j] = i;
        at += d;
    }
    for (int k3 = 0; k3 < 3; k3++) PyArray_CLEARFLAGS((PyArrayObject *)out[k3], NPY_ARRAY_WRITEABLE);
    PyObject *result = PyTuple_Pack(3, out[0], out[1], out[2]);
    for (int k3 = 0; k3 < 3; k3++) Py_DECREF(out[k3]);
    return result;
}

/* same_ints(a, b): a.shape == b.shape and (a == b).all() for two C-contiguous 1-D int64 arrays (planner.same_ints),
   else NotImplemented. */
static PyObject *same_ints(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (!takes("same_ints", nargs, 2)) return NULL;
    PyArrayObject *a = vec(args[0], NPY_INT64, -1), *b = vec(args[1], NPY_INT64, -1);
    if (!a || !b) Py_RETURN_NOTIMPLEMENTED;
    const npy_intp n = PyArray_DIM(a, 0);
    if (n != PyArray_DIM(b, 0)) Py_RETURN_FALSE;
    if (n && memcmp(PyArray_DATA(a), PyArray_DATA(b), (size_t)n * sizeof(int64_t))) Py_RETURN_FALSE;
    Py_RETURN_TRUE;
}

/* int_stats(a): (min, max, sum) of a non-empty C-contiguous 1-D int64 array (the sum wraps as numpy's int64 sum
   does), None when it is empty, NotImplemented for other arrays. */
static PyObject *int_stats(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (!takes("int_stats", nargs, 1)) return NULL;
    PyArrayObject *a = vec(args[0], NPY_INT64, -1);
    if (!a) Py_RETURN_NOTIMPLEMENTED;
    const npy_intp n = PyArray_DIM(a, 0);
    if (n == 0) Py_RETURN_NONE;
    const int64_t *v = (const int64_t *)PyArray_DATA(a);
    int64_t lo = v[0], hi = v[0];
    uint64_t sum = 0;
    for (npy_intp i = 0; i < n; i++) {
        lo = v[i] < lo ? v[i] : lo;
        hi = v[i] > hi ? v[i] : hi;
        sum += (uint64_t)v[i];
    }
    return Py_BuildValue("(LLL)", (long long)lo, (long long)hi, (long long)(int64_t)sum);
}

/* any_above(a, b): whether a[i] > b[i] for some i < len(a), for C-contiguous 1-D int64 arrays with len(b) >= len(a)
   (numpy: (a > b[:len(a)]).any()), else NotImplemented. */
static PyObject *any_above(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (!takes("any_above", nargs, 2)) return NULL;
    PyArrayObject *a = vec(args[0], NPY_INT64, -1), *b = vec(args[1], NPY_INT64, -1);
    if (!a || !b || PyArray_DIM(b, 0) < PyArray_DIM(a, 0)) Py_RETURN_NOTIMPLEMENTED;
    const npy_intp n = PyArray_DIM(a, 0);
    const int64_t *x = (const int64_t *)PyArray_DATA(a), *y = (const int64_t *)PyArray_DATA(b);
    for (npy_intp i = 0; i < n; i++)
        if (x[i] > y[i]) Py_RETURN_TRUE;
    Py_RETURN_FALSE;
}

/* The key (node id, tokens) of a tally dict as its tokens and its count as r; 0 where the item is not so shaped */
static int tally_item(PyObject *key, PyObject *value, int64_t *tokens, int64_t *r) {
    if (!PyTuple_CheckExact(key) || PyTuple_GET_SIZE(key) != 2 || !PyLong_CheckExact(value)) return 0;
    long long t = PyLong_AsLongLong(PyTuple_GET_ITEM(key, 1)), n = PyLong_AsLongLong(value);
    if ((t == -1 || n == -1) && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    *tokens = t;
    *r = n;
    return t >= 0 && n >= 1;
}

/* count_bound(refs, firsts, rows_per_block, token_bytes, partial_bytes): planner.count_bound (its reference and
   fallback) in one pass over the two dicts ({(node id, tokens): rows}): (the sum of node_blocks over refs, the sum of
   first_node_partials over firsts), or NotImplemented where they are not so shaped. */
static PyObject *count_bound(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (!takes("count_bound", nargs, 5)) return NULL;
    PatBoundShape shape;
    if (as_int64(args[2], &shape.rows_per_block) || as_int64(args[3], &shape.token_bytes) ||
        as_int64(args[4], &shape.partial_bytes))
        return NULL;
    if (!PyDict_Check(args[0]) || !PyDict_Check(args[1]) || shape.rows_per_block < 1) Py_RETURN_NOTIMPLEMENTED;
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    int64_t t, r, blocks = 0, partials = 0;
    while (PyDict_Next(args[0], &pos, &key, &value)) {
        if (!tally_item(key, value, &t, &r)) Py_RETURN_NOTIMPLEMENTED;
        blocks += pat_node_blocks(r, t, &shape);
    }
    pos = 0;
    while (PyDict_Next(args[1], &pos, &key, &value)) {
        if (!tally_item(key, value, &t, &r)) Py_RETURN_NOTIMPLEMENTED;
        partials += pat_first_node_partials(r, t, &shape);
    }
    return Py_BuildValue("(LL)", (long long)blocks, (long long)partials);
}

/* moved_bound(blocks, partials, cached, seq_lens, total, token_bytes): planner.moved_bound (its reference and
   fallback) in one pass over the real requests' cached lengths (int64) and the batch's lengths (int64, at least as
   many), or NotImplemented for arrays it does not take. */
static PyObject *moved_bound(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (!takes("moved_bound", nargs, 6)) return NULL;
    PyArrayObject *cached = vec(args[2], NPY_INT64, -1), *seq = vec(args[3], NPY_INT64, -1);
    int64_t blocks, partials, total, token_bytes;
    if (as_int64(args[0], &blocks) || as_int64(args[1], &partials) || as_int64(args[4], &total) ||
        as_int64(args[5], &token_bytes))
        return NULL;
    if (!cached || !seq || PyArray_DIM(seq, 0) < PyArray_DIM(cached, 0)) Py_RETURN_NOTIMPLEMENTED;
    const npy_intp n = PyArray_DIM(cached, 0);
    const int64_t *c = (const int64_t *)PyArray_DATA(cached), *s = (const int64_t *)PyArray_DATA(seq);
    int64_t tokens = total + blocks;
    int every_private = 1;
    for (npy_intp i = 0; i < n; i++) {
        tokens -= c[i];
        every_private &= s[i] > c[i];
    }
    return PyLong_FromLongLong(tokens * token_bytes + (every_private ? partials : 0));
}

/* Read list `lst` of n ints into out; -1 with an exception set where an item is not an int */
static int read_ints(PyObject *lst, Py_ssize_t n, int64_t *out) {
    for (Py_ssize_t i = 0; i < n; i++)
        if (as_int64(PyList_GET_ITEM(lst, i), &out[i])) return -1;
    return 0;
}

/* kept_pack(tok, start, parents, depth): forest_edit._Kept.make's arrays from its four lists of K ints (parents
   first: parents[k] < k, or -1): (lineage, packed, tok, start, parent, depth, end, num_ancestors, ancestors), where
   lineage[0] = [] and lineage[k + 1] = [k, *lineage[parents[k] + 1]] (lists), packed is one int64 array of tok, start,
   parents, depth (K each), end (K + 1: 0, then start + tok), num_ancestors (K + 1: 0, then depth + 1) and the lineages
   as rows of width max(1, longest lineage) padded with -1, and the rest are its views (ancestors 2-D). A _Kept is
   rebuilt so whenever an edit makes or dissolves kept nodes (about half the edits at batch 256): in Python its lineage
   lists and the one conversion of ~300 ints into the packed array were ~70 us of such an edit on the 2-core VM. */
static PyObject *kept_pack(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 4 || !PyList_Check(args[0]) || !PyList_Check(args[1]) || !PyList_Check(args[2]) ||
        !PyList_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "kept_pack takes 4 lists");
        return NULL;
    }
    const Py_ssize_t K = PyList_GET_SIZE(args[2]);
    if (PyList_GET_SIZE(args[0]) != K || PyList_GET_SIZE(args[1]) != K || PyList_GET_SIZE(args[3]) != K) {
        PyErr_SetString(PyExc_ValueError, "kept_pack: four lists of one length");
        return NULL;
    }
    const Py_ssize_t rows = K + 1;
    int64_t *vals = (int64_t *)PyMem_Malloc((size_t)(4 * K + 2 * rows + 1) * sizeof(int64_t));
    if (vals == NULL) return PyErr_NoMemory();
    int64_t *tok = vals, *start = vals + K, *par = vals + 2 * K, *dep = vals + 3 * K, *len = vals + 4 * K;
    PyObject *lineage = NULL, *packed = NULL, *out = NULL;
    PyObject *views[7] = {NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    if (read_ints(args[0], K, tok) || read_ints(args[1], K, start) || read_ints(args[2], K, par) ||
        read_ints(args[3], K, dep))
        goto done;
    /* lineage lengths (parents first), then the width */
    len[0] = 0;
    int64_t width = 1;
    for (Py_ssize_t k = 0; k < K; k++) {
        if (par[k] < -1 || par[k] >= k) {
            PyErr_SetString(PyExc_IndexError, "kept_pack: a parent that is not an earlier kept node");
            goto done;
        }
        len[k + 1] = 1 + len[par[k] + 1];
        width = len[k + 1] > width ? len[k + 1] : width;
    }
    lineage = PyList_New(rows);
    if (lineage == NULL) goto done;
    PyList_SET_ITEM(lineage, 0, PyList_New(0));
    if (PyList_GET_ITEM(lineage, 0) == NULL) goto done;
    for (Py_ssize_t k = 0; k < K; k++) { /* [k, *lineage[parent + 1]]: the parent's items shared, not copied */
        PyObject *up = PyList_GET_ITEM(lineage, par[k] + 1), *line = PyList_New(len[k + 1]);
        if (line == NULL) goto done;
        PyObject *me = PyLong_FromSsize_t(k);
        if (me == NULL) {
            Py_DECREF(line);
            goto done;
        }
        PyList_SET_ITEM(line, 0, me);
        for (Py_ssize_t i = 1; i < len[k + 1]; i++) {
            PyObject *v = PyList_GET_ITEM(up, i - 1);
            Py_INCREF(v);
            PyList_SET_ITEM(line, i, v);
        }
        PyList_SET_ITEM(lineage, k + 1, line);
    }
    const npy_intp total = 4 * K + 2 * rows + rows * width;
    packed = fresh(total, NPY_INT64, 0);
    if (packed == NULL) goto done;
    int64_t *p = (int64_t *)PyArray_DATA((PyArrayObject *)packed);
    memcpy(p, vals, (size_t)(4 * K) * sizeof(int64_t));
    int64_t *end = p + 4 * K, *num = end + rows, *anc = num + rows;
    end[0] = num[0] = 0;
    for (Py_ssize_t k = 0; k < K; k++) {
        end[k + 1] = start[k] + tok[k];
        num[k + 1] = dep[k] + 1;
    }
    for (Py_ssize_t i = 0; i < rows * width; i++) anc[i] = -1;
    for (Py_ssize_t k = 0; k < K; k++) { /* row k + 1: k, then the parent's row */
        int64_t *row = anc + (k + 1) * width;
        row[0] = k;
        memcpy(row + 1, anc + (par[k] + 1) * width, (size_t)(len[k + 1] - 1) * sizeof(int64_t));
    }
    for (int i = 0; i < 4; i++)
        if ((views[i] = view(packed, 8 * i * K, K, NPY_INT64)) == NULL) goto done;
    if ((views[4] = view(packed, 8 * 4 * K, rows, NPY_INT64)) == NULL) goto done;
    if ((views[5] = view(packed, 8 * (4 * K + rows), rows, NPY_INT64)) == NULL) goto done;
    {
        npy_intp dims[2] = {rows, (npy_intp)width};
        views[6] = PyArray_New(&PyArray_Type, 2, dims, NPY_INT64, NULL, anc, 0, NPY_ARRAY_CARRAY, NULL);
        if (views[6] == NULL) goto done;
        Py_INCREF(packed);
        if (PyArray_SetBaseObject((PyArrayObject *)views[6], packed) < 0) goto done;
    }
    out = PyTuple_Pack(9, lineage, packed, views[0], views[1], views[2], views[3], views[4], views[5], views[6]);
done:
    PyMem_Free(vals);
    Py_XDECREF(lineage);
    Py_XDECREF(packed);
    for (int i = 0; i < 7; i++) Py_XDECREF(views[i]);
    return out;
}

/* pack_numbers(pack_tokens, kv_offset, pack_req_count, rpb): a planning pass's first numbers over its packs
   (planner._plan): (pack_blocks = ceil(pack_req_count / rpb) as a fresh int64 array, kv_limit = max(kv_offset +
   pack_tokens), planned_tokens = pack_tokens @ pack_blocks, longest = max(pack_tokens)): host_pass.c's
   pat_pack_numbers, which the compiled pass calls too; NotImplemented for no packs or arrays other than C-contiguous 1-D
   int64 of one length. */
/* split_length(candidates, longest, pack_tokens, pack_blocks, pack_req_count, pack_req, num_requests, slots,
   block_token_bytes, block_overheads, chain_slot_bytes, tolerance, batch_items) -> the chosen split length:
   host_core._HostCore.split_length (host_simulate.c pat_split_length) with the same checks and errors, in one call.
   candidates: a list of ints, longest first; per-pack arrays C-contiguous int64 of one length, pack_req int32,
   block_token_bytes int64 and block_overheads float64 of one length. */
static PyObject *split_length(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (!takes("split_length", nargs, 14)) return NULL;
    PyArrayObject *tokens = vec(args[2], NPY_INT64, -1);
    const npy_intp packs = tokens != NULL ? PyArray_DIM(tokens, 0) : 0;
    PyArrayObject *blocks = vec(args[3], NPY_INT64, packs), *req_count = vec(args[4], NPY_INT64, packs);
    PyArrayObject *req = vec(args[5], NPY_INT32, -1), *token_bytes = vec(args[8], NPY_INT64, -1);
    PyArrayObject *overheads = vec(args[9], NPY_FLOAT64, token_bytes != NULL ? PyArray_DIM(token_bytes, 0) : -1);
    if (!tokens || !blocks || !req_count || !req || !token_bytes || !overheads) {
        PyErr_SetString(PyExc_ValueError,
                        "split_length: per-pack arrays must be C-contiguous int64 of one length, pack_req int32");
        return NULL;
    }
    int64_t longest, num_requests, slots, long_tokens, batch_items;
    if (as_int64(args[1], &longest) || as_int64(args[6], &num_requests) || as_int64(args[7], &slots) ||
        as_int64(args[10], &long_tokens) || as_int64(args[13], &batch_items))
        return NULL;
    const double chain = PyFloat_AsDouble(args[11]);
    if (chain == -1.0 && PyErr_Occurred()) return NULL;
    const double tolerance = PyFloat_AsDouble(args[12]);
    if (tolerance == -1.0 && PyErr_Occurred()) return NULL;
    PyObject *seq = PySequence_Fast(args[0], "split_length: candidates must be a sequence of ints");
    if (seq == NULL) return NULL;
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n < 1) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "split_length: no candidate lengths");
        return NULL;
    }
    int64_t *lengths = (int64_t *)PyMem_Malloc(sizeof(int64_t) * (size_t)n);
    if (lengths == NULL) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (as_int64(PySequence_Fast_GET_ITEM(seq, i), &lengths[i])) {
            PyMem_Free(lengths);
            Py_DECREF(seq);
            return NULL;
        }
    }
    Py_DECREF(seq);
    const int64_t got = pat_split_length(lengths, n, longest, PyArray_DATA(tokens), PyArray_DATA(blocks),
                                         PyArray_DATA(req_count), PyArray_DATA(req), PyArray_DIM(req, 0), num_requests,
                                         packs, slots, PyArray_DATA(token_bytes), PyArray_DATA(overheads),
                                         PyArray_DIM(overheads, 0), long_tokens, chain, tolerance, batch_items);
    PyMem_Free(lengths);
    if (got < 0) {
        PyErr_SetString(PyExc_MemoryError, "pat_split_length: no scratch memory");
        return NULL;
    }
    return PyLong_FromLongLong((long long)got);
}

static PyObject *pack_numbers(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (!takes("pack_numbers", nargs, 4)) return NULL;
    PyArrayObject *tok = vec(args[0], NPY_INT64, -1);
    const npy_intp n = tok ? PyArray_DIM(tok, 0) : 0;
    PyArrayObject *off = vec(args[1], NPY_INT64, n), *cnt = vec(args[2], NPY_INT64, n);
    int64_t rpb;
    if (as_int64(args[3], &rpb)) return NULL;
    if (!tok || !off || !cnt || n == 0 || rpb < 1) Py_RETURN_NOTIMPLEMENTED;
    PyObject *blocks = fresh(n, NPY_INT64, 0);
    if (blocks == NULL) return NULL;
    int64_t limit, longest;
    const int64_t planned = pat_pack_numbers(n, PyArray_DATA(tok), PyArray_DATA(off), PyArray_DATA(cnt), rpb,
                                             PyArray_DATA((PyArrayObject *)blocks), &limit, &longest);
    PyObject *out = Py_BuildValue("(OLLL)", blocks, (long long)limit, (long long)planned, (long long)longest);
    Py_DECREF(blocks);
    return out;
}

/* split_numbers(pack_tokens, length, pack_blocks, pack_req_count): the packs' KV split counts at split length
   `length` (planner._split_counts: max(1, ceil(tokens / length)), a fresh int64 array) and the items and entries they
   make (splits @ pack_blocks, splits @ pack_req_count): host_pass.c's pat_split_numbers; NotImplemented for arrays
   other than C-contiguous 1-D int64 of one length or a length below 1. */
static PyObject *split_numbers(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (!takes("split_numbers", nargs, 4)) return NULL;
    PyArrayObject *tok = vec(args[0], NPY_INT64, -1);
    const npy_intp n = tok ? PyArray_DIM(tok, 0) : 0;
    PyArrayObject *blk = vec(args[2], NPY_INT64, n), *cnt = vec(args[3], NPY_INT64, n);
    int64_t length;
    if (as_int64(args[1], &length)) return NULL;
    if (!tok || !blk || !cnt || length < 1) Py_RETURN_NOTIMPLEMENTED;
    PyObject *splits = fresh(n, NPY_INT64, 0);
    if (splits == NULL) return NULL;
    int64_t items, entries;
    pat_split_numbers(n, PyArray_DATA(tok), length, PyArray_DATA(blk), PyArray_DATA(cnt),
                      PyArray_DATA((PyArrayObject *)splits), &items, &entries);
    PyObject *out = Py_BuildValue("(OLL)", splits, (long long)items, (long long)entries);
    Py_DECREF(splits);
    return out;
}

/* packs_all_pay(q, tok, shared, rpb, tok_bytes, partial_bytes): whether every shared node pays for its own pack
   (planner._choose_packs' fast check: (q - ceil(q / rpb)) * tok_bytes * tok > q * partial_bytes at every node where
   shared is set): host_pass.c's pat_packs_all_pay; NotImplemented for arrays other than C-contiguous 1-D int64
   (shared: bool) of one length. */
static PyObject *packs_all_pay(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (!takes("packs_all_pay", nargs, 6)) return NULL;
    PyArrayObject *q = vec(args[0], NPY_INT64, -1);
    const npy_intp n = q ? PyArray_DIM(q, 0) : 0;
    PyArrayObject *tok = vec(args[1], NPY_INT64, n), *shared = vec(args[2], NPY_BOOL, n);
    int64_t rpb, tb, pb;
    if (as_int64(args[3], &rpb) || as_int64(args[4], &tb) || as_int64(args[5], &pb)) return NULL;
    if (!q || !tok || !shared || rpb < 1) Py_RETURN_NOTIMPLEMENTED;
    if (pat_packs_all_pay(n, PyArray_DATA(q), PyArray_DATA(tok), PyArray_DATA(shared), rpb, tb, pb)) Py_RETURN_TRUE;
    Py_RETURN_FALSE;
}

/* all_multiples(a, k): whether every entry of a C-contiguous 1-D int64 array is a multiple of k >= 1 (planner
   plan_forest's check of the rows' bases), else NotImplemented. */
static PyObject *all_multiples(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (!takes("all_multiples", nargs, 2)) return NULL;
    PyArrayObject *a = vec(args[0], NPY_INT64, -1);
    int64_t k;
    if (as_int64(args[1], &k)) return NULL;
    if (!a || k < 1) Py_RETURN_NOTIMPLEMENTED;
    const int64_t *v = (const int64_t *)PyArray_DATA(a);
    for (npy_intp i = 0, n = PyArray_DIM(a, 0); i < n; i++)
        if (v[i] % k != 0) Py_RETURN_FALSE;
    Py_RETURN_TRUE;
}

/* graph_launch(fns, exec, nodes, params, n, stream): host_launch.c's pat_graph_launch with the addresses and counts
   given as Python ints (launch.KernelGraph keeps them: the function table, the node and parameter pointer arrays) */
static PyObject *graph_launch(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (!takes("graph_launch", nargs, 6)) return NULL;
    void *fns = PyLong_AsVoidPtr(args[0]), *exec = PyLong_AsVoidPtr(args[1]), *nodes = PyLong_AsVoidPtr(args[2]),
         *params = PyLong_AsVoidPtr(args[3]);
    const long long n = PyLong_AsLongLong(args[4]);
    void *stream = PyLong_AsVoidPtr(args[5]);
    if (PyErr_Occurred()) return NULL;
    if (fns == NULL || nodes == NULL || params == NULL || n < 1) {
        PyErr_SetString(PyExc_ValueError, "graph_launch: null tables or no nodes");
        return NULL;
    }
    return PyLong_FromLongLong(pat_graph_launch((void *const *)fns, exec, (void *const *)nodes,
                                                (void *const *)params, n, stream));
}

static PyMethodDef METHODS[] = {
    {"graph_launch", (PyCFunction)(void (*)(void))graph_launch, METH_FASTCALL, "launch.KernelGraph.launch_unless_capturing"},
    {"pack_numbers", (PyCFunction)(void (*)(void))pack_numbers, METH_FASTCALL, "planner._pack_numbers"},
    {"split_length", (PyCFunction)(void (*)(void))split_length, METH_FASTCALL, "host_core._HostCore.split_length"},
    {"split_numbers", (PyCFunction)(void (*)(void))split_numbers, METH_FASTCALL, "planner._split_numbers"},
    {"packs_all_pay", (PyCFunction)(void (*)(void))packs_all_pay, METH_FASTCALL, "planner._choose_packs"},
    {"all_multiples", (PyCFunction)(void (*)(void))all_multiples, METH_FASTCALL, "planner.plan_forest"},
    {"kept_pack", (PyCFunction)(void (*)(void))kept_pack, METH_FASTCALL, "forest_edit._Kept.make's arrays"},
    {"same_ints", (PyCFunction)(void (*)(void))same_ints, METH_FASTCALL, "planner.same_ints"},
    {"int_stats", (PyCFunction)(void (*)(void))int_stats, METH_FASTCALL, "planner.int_stats"},
    {"any_above", (PyCFunction)(void (*)(void))any_above, METH_FASTCALL, "planner.any_above"},
    {"gens_at", (PyCFunction)(void (*)(void))gens_at, METH_FASTCALL, "publish._gens_at"},
    {"rows_to_read", (PyCFunction)(void (*)(void))rows_to_read, METH_FASTCALL, "chain_table._rows_to_read"},
    {"batch_arrays", (PyCFunction)(void (*)(void))batch_arrays, METH_FASTCALL, "chain_table._batch_arrays"},
    {"plan_items", (PyCFunction)(void (*)(void))plan_items, METH_FASTCALL, "host_core._HostCore.plan_items"},
    {"plan_pass", (PyCFunction)(void (*)(void))plan_pass, METH_FASTCALL, "planner._plan's pass"},
    {"count_bound", (PyCFunction)(void (*)(void))count_bound, METH_FASTCALL, "planner.count_bound"},
    {"moved_bound", (PyCFunction)(void (*)(void))moved_bound, METH_FASTCALL, "planner.moved_bound"},
    {"stage_plan", (PyCFunction)(void (*)(void))stage_plan, METH_FASTCALL, "kernels._stage_plan"},
    {"edit_forest", (PyCFunction)(void (*)(void))edit_forest, METH_FASTCALL, "host_core._HostCore.edit_forest"},
    {"write_paths", (PyCFunction)(void (*)(void))write_paths, METH_FASTCALL, "chain_table._RowPaths.flush"},
    {"gather_paths", (PyCFunction)(void (*)(void))gather_paths, METH_FASTCALL, "chain_table._RowPaths.paths"},
    {"remade_items", (PyCFunction)(void (*)(void))remade_items, METH_FASTCALL, "planner.remade_plan"},
    {"forest_from_paths", (PyCFunction)(void (*)(void))forest_from_paths, METH_FASTCALL,
     "forest.PrefixForest.from_paths"},
    {"edit_places", (PyCFunction)(void (*)(void))edit_places, METH_FASTCALL, "host_core._HostCore.edit_places"},
    {"edit_common", (PyCFunction)(void (*)(void))edit_common, METH_FASTCALL, "forest_edit.RadixIndex.edit after "
     "its survivors"},
#define PUBLISHER(name) {#name, (PyCFunction)(void (*)(void))name, METH_FASTCALL, "host_batch.c pat_" #name}
    PUBLISHER(pick_batch),
    PUBLISHER(survivors),
    PUBLISHER(chain_signatures),
    PUBLISHER(wave_entries),
    PUBLISHER(set_wave),
    PUBLISHER(tally_refs),
    PUBLISHER(publish_read),
    PUBLISHER(tally_changes),
#undef PUBLISHER
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {PyModuleDef_HEAD_INIT, "pat_host_glue", NULL, -1, METHODS};

PyMODINIT_FUNC PyInit_pat_host_glue(void) {
    import_array();
    PyObject *m = PyModule_Create(&MODULE);
    /* graph_launch's return codes (host_launch.h), for launch.py */
    if (m != NULL && (PyModule_AddIntConstant(m, "GRAPH_LAUNCH_CAPTURING", PAT_LAUNCH_CAPTURING) < 0 ||
                      PyModule_AddIntConstant(m, "GRAPH_LAUNCH_STAGES", PAT_LAUNCH_STAGES) < 0)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
