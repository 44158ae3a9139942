/* A published decode batch's per-request tuples and its change against the last batch, compiled for the host
   (pat_sglang/host_core.py loads it with ctypes.PyDLL: its call holds the interpreter lock and uses the CPython API,
   unlike those of host_simulate.c and host_rows.c).

   Role in pack-forward-merge: part of *pack*, the scheduler-side publisher (pat_sglang/sglang_patches/chain_table.py,
   ChainTable.publish_rows). A changed decode batch of 256 requests cost ~105 us of publishing before any request was
   read, on the project's 2-core VM, much of it in six C-level passes over the batch (the rows as a list and a set, the
   entries' and request ids' tuples, the rows that joined and left as set differences, the absent entries), each a few
   microseconds and more when it runs cold between two decode steps. Here they are four loops in one call, with no
   list, set or int object made for the rows that did not change.

   pat_pick_batch(rows, row_entry, row_rid, before, mark, stamp): rows is an int64 buffer (the batch's pool rows, in
   batch order, each < len(mark)); row_entry and row_rid are lists indexed by row (every row < their length); before
   is None or an int64 buffer of the last batch's rows (distinct: the tally's rows); mark is a writable int64 buffer
   of one slot per row, none holding stamp or stamp + 1 (the caller moves stamp on by 2 per call). Returns (entries,
   rids, absent, joined, left): the tuples of row_entry[r] and row_rid[r] over rows, how many of those entries are
   None, the rows of the batch that are not rows of before (each once) and the rows of before that are not rows of
   the batch; joined and left are empty lists where before is None. The Python version is chain_table._pick_batch
   (joined and left are sets there, as lists in another order). before was a dict of the rows (the tally's): reading
   its 256 int keys twice cost more than the rest of the call, cold between two decode steps.

   pat_survivors(entries, old_entries, rows, old_rows, table, old_of): which requests of a changed batch are last
   batch's, for the decode step's planner (pat_sglang/forest_edit.py: an edited forest, a re-made plan). entries and
   old_entries are the two batches' tuples of published entries; rows and old_rows int64 buffers of at least as many
   pool rows (the first len(entries) and len(old_entries) are read); old_of a writable int64 buffer of len(entries).
   Request i survives as old request k when k is the last old request in row rows[i] and old_entries[k] is entries[i]
   (an entry is made for one request in one row: the same object is the same request with the same path); old_of[i]
   = k, or -1 for a joiner. table is a writable int64 scratch indexed by row, every slot -1 (left so). Returns
   (joiners, leavers, in order): the joiners' indices in entries and the old requests that did not survive (lists,
   ascending), and whether the survivors keep their relative order; or the int -(rows needed in table) when a row is
   beyond it (0 when a row is negative), with nothing written. The numpy version is forest_edit._survivors.

   pat_chain_signatures(nodes, root, memo): the radix chain signature of each radix node of the list nodes (a wave of
   joining requests' last nodes), for ChainTable._read_wave: per node, (node id, its value's data pointer, its value's
   element count) of it and each ancestor up to root, the node's own first, as a tuple of 3-tuples of ints; None where
   the chain cannot be read (it ends at None instead of root, or a node on it has no value or a value without
   data_ptr). memo is a dict keyed by id(node), shared between the calls of one publishing: a node found in it takes
   its value, and every node read is written into it (a shared system prompt's nodes are read once per batch). The
   same walk, reads and memo writes as chain_table.chain_signature over each node in turn (and _wave_signatures,
   their Python reference): each node's chain is built from the first node above it already in memo (or root), one
   tuple per node, ~2.9 us of Python per joining request on the project's 2-core VM (a third of a wave's reading).
   Python errors raised by the nodes' attributes propagate, as they do from the Python version.

   pat_wave_entries(changed, cls, keys, lengths, depths, starts, cached): chain_table.make_entries' arrays and entries
   for a wave of changed rows. changed is a list of (row, rid, generation, signature) tuples, each signature a tuple of
   (node id, data pointer, tokens) int tuples, the request's own node first; cls the entry class (ChainEntry); keys and
   lengths writable int64 buffers of the signatures' total node count, depths an int64 buffer of len(changed) holding
   each signature's length, starts and cached writable int64 buffers of len(changed). Writes every signature's node ids
   and tokens root first, one after another (keys, lengths), each one's first index (starts) and its tokens' sum
   (cached); makes keys and lengths read-only (setflags); returns the entries, one per changed row: cls instances with
   rid, generation, signature, keys and lengths (slices of the two arrays) and cached_len set as
   ChainEntry.with_arrays sets them. NotImplemented (nothing made) where the arguments are not of that shape; ~3 us
   per entry of numpy iteration and Python object work in make_entries on the project's 2-core VM, at chains of ~11
   radix nodes.

   pat_set_wave(entries, row_entry, rows_of_node, rows, made): ChainTable._set_entries' loop over a wave's rows (the
   list rows, Python ints, distinct, each < len(row_entry)) and their new entries (the list made): per row, its old
   entry in the dict entries (if any) taken out of the node -> rows index rows_of_node (a dict of sets keyed by radix
   node id: the row discarded from the set of every node of the old entry's signature, an emptied set deleted), then
   entries[row] = row_entry[row] = its new entry and the row added to the set of every node of the new signature (a set
   made where there is none). The same dict and set operations in the same order as the Python loop (_set_entry's
   _unindex / _index), whose ~11 dict and set calls per entry at chains of ~11 radix nodes were a third of a wave's
   publishing with the two pieces above compiled. Returns None, or NotImplemented (nothing changed) where the
   arguments are not of that shape; Python errors (a node id that cannot be hashed) propagate.

   pat_tally_refs(req, keys, tokens): chain_table._Tally.rebuild's count of a batch's flat radix paths (req, keys,
   tokens: int64 buffers of one length, PublishedBatch.paths, each path root first): (refs, total, firsts), refs the
   dict {(node id, tokens): how many of the paths pass through it} in first-seen order, total the sum of tokens over
   its keys, firsts the same count of the paths' first nodes only; refs the same dict as
   dict(Counter(zip(keys.tolist(), tokens.tolist()))), with the pairs counted in a C hash table first and a Python
   tuple made per distinct pair only (a wave of 256 requests on ~11-node chains: 2816 pairs, 548 distinct, ~290 us in
   the Counter on the project's 2-core VM). NotImplemented where the buffers are not of that shape.

   pat_publish_read(table, reqs, rows, gens, root, moved, recached, cls, wave): ChainTable._publish_read, the reading of
   a changed decode batch in ChainTable.publish_rows, in one call over the table's own dicts, lists and arrays (its
   Python version is the reference and the fallback). reqs is the batch's list of requests, rows and gens int64
   buffers of their pool rows and those rows' generations, moved a tuple of the radix node ids split since the last
   batch, recached a list of the rows re-cached since, cls the entry class (ChainEntry), wave the most rows it reads
   (chain_table._COMPILED_READ_ROWS: waves included). The rows through a split node and the re-cached ones are marked
   unread (-2 in table._row_gen); the batch's rows whose generation differs from their last read are read: each
   request's req_pool_idx checked against its row, its chain's signature walked from its last node
   (chain_table.chain_signature, one memo per call), the read noted (table._read_as, _row_gen, _row_rid), its entry
   dropped where the chain cannot be read or replaced by a new cls instance where its request, generation or signature
   changed (entries, _row_entry, the node -> rows index, table._row_paths' pending row, depth and cached length); rows
   through a split node outside the batch are dropped. Returns (entries made, the rows read as a list in batch order),
   False where a request read is out of step with its row (the marks written, nothing read), or NotImplemented with
   nothing written where the arguments are not of that shape, a row is beyond the table's per-row arrays (the Python
   version grows them) or more than wave rows are to be read (the Python version then). With a changed step's 1-2
   joiners at batch 256 this was ~40 us of Python statements on the project's 2-core VM
   (docs/perf/host/2026-12-04-fiftieth-vm-statement-costs.txt); a wave of 256 joiners reads in ~0.68x the Python wave
   path's time with the wave pieces above (docs/perf/host/2026-12-04-fiftythird-vm-wave-by-rows.txt).

   pat_tally_changes(tally, left, touched, entries): chain_table._Tally.update_changes: the tally (by_row, refs, firsts,
   total, version, and where its shape is set the dispatch gate's terms blocks and partials, host_bound.h) moved from
   the last batch to this one by the rows that left (a list) and the rows touched (a list: joined or read again, a row
   may be there twice) with their entries now in the dict entries (absent: none), each node's count and the distinct
   tokens moved as _Tally._count moves them, in the same order. Returns the new total, or
   NotImplemented with nothing changed where the arguments are not lists and a dict or an entry's signature is not
   3-tuples of ints. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "host_bound.h"

/* The tuple of lst[rows[i]] over i; NULL with an IndexError where a row is outside lst. */
static PyObject *pick(const int64_t *rows, Py_ssize_t n, PyObject *lst, Py_ssize_t *nones) {
    const Py_ssize_t len = PyList_GET_SIZE(lst);
    PyObject *out = PyTuple_New(n);
    if (out == NULL) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        const int64_t r = rows[i];
        if (r < 0 || r >= len) {
            Py_DECREF(out);
            PyErr_SetString(PyExc_IndexError, "pat_pick_batch: a row outside the table's per-row lists");
            return NULL;
        }
        PyObject *item = PyList_GET_ITEM(lst, r);
        if (nones != NULL && item == Py_None) (*nones)++;
        Py_INCREF(item);
        PyTuple_SET_ITEM(out, i, item);
    }
    return out;
}

/* Append the int r to lst; -1 on failure. */
static int append_row(PyObject *lst, int64_t r) {
    PyObject *v = PyLong_FromLongLong(r);
    if (v == NULL) return -1;
    const int rc = PyList_Append(lst, v);
    Py_DECREF(v);
    return rc;
}

PyObject *pat_pick_batch(PyObject *rows_obj, PyObject *row_entry, PyObject *row_rid, PyObject *before_obj,
                         PyObject *mark_obj, int64_t stamp) {
    if (!PyList_Check(row_entry) || !PyList_Check(row_rid)) {
        PyErr_SetString(PyExc_TypeError, "pat_pick_batch: row_entry and row_rid must be lists");
        return NULL;
    }
    Py_buffer rows_buf, mark_buf, before_buf = {0};
    if (PyObject_GetBuffer(rows_obj, &rows_buf, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return NULL;
    if (PyObject_GetBuffer(mark_obj, &mark_buf, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&rows_buf);
        return NULL;
    }
    if (before_obj != Py_None && PyObject_GetBuffer(before_obj, &before_buf, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&mark_buf);
        PyBuffer_Release(&rows_buf);
        return NULL;
    }
    PyObject *entries = NULL, *rids = NULL, *joined = NULL, *left = NULL, *result = NULL;
    if (rows_buf.itemsize != 8 || mark_buf.itemsize != 8 || (before_obj != Py_None && before_buf.itemsize != 8)) {
        PyErr_SetString(PyExc_TypeError, "pat_pick_batch: rows, before and mark must be int64 buffers");
        goto done;
    }
    const int64_t *rows = (const int64_t *)rows_buf.buf;
    int64_t *mark = (int64_t *)mark_buf.buf;
    const Py_ssize_t n = rows_buf.len / 8;
    const int64_t slots = (int64_t)(mark_buf.len / 8);
    const int64_t was = stamp, now = stamp + 1; /* a row of before; a row of the batch */
    for (Py_ssize_t i = 0; i < n; i++) {
        if (rows[i] < 0 || rows[i] >= slots) {
            PyErr_SetString(PyExc_IndexError, "pat_pick_batch: a row outside mark");
            goto done;
        }
    }
    Py_ssize_t absent = 0;
    entries = pick(rows, n, row_entry, &absent);
    if (entries == NULL) goto done;
    rids = pick(rows, n, row_rid, NULL);
    if (rids == NULL) goto done;
    joined = PyList_New(0);
    left = PyList_New(0);
    if (joined == NULL || left == NULL) goto done;
    if (before_obj == Py_None) goto build;
    const int64_t *old = (const int64_t *)before_buf.buf;
    const Py_ssize_t m = before_buf.len / 8;
    for (Py_ssize_t i = 0; i < m; i++) {
        if (old[i] >= 0 && old[i] < slots) mark[old[i]] = was;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        const int64_t r = rows[i];
        if (mark[r] != was && mark[r] != now && append_row(joined, r) < 0) goto done;
        mark[r] = now;
    }
    for (Py_ssize_t i = 0; i < m; i++) {
        const int64_t r = old[i];
        if ((r < 0 || r >= slots || mark[r] != now) && append_row(left, r) < 0) goto done;
    }
build:
    result = Py_BuildValue("(OOnOO)", entries, rids, absent, joined, left);
done:
    Py_XDECREF(entries);
    Py_XDECREF(rids);
    Py_XDECREF(joined);
    Py_XDECREF(left);
    if (before_obj != Py_None) PyBuffer_Release(&before_buf);
    PyBuffer_Release(&mark_buf);
    PyBuffer_Release(&rows_buf);
    return result;
}

PyObject *pat_survivors(PyObject *entries, PyObject *old_entries, PyObject *rows_obj, PyObject *old_rows_obj,
                        PyObject *table_obj, PyObject *old_of_obj) {
    if (!PyTuple_Check(entries) || !PyTuple_Check(old_entries)) {
        PyErr_SetString(PyExc_TypeError, "pat_survivors: entries and old_entries must be tuples");
        return NULL;
    }
    Py_buffer rows_buf, old_buf, table_buf, out_buf;
    if (PyObject_GetBuffer(rows_obj, &rows_buf, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return NULL;
    if (PyObject_GetBuffer(old_rows_obj, &old_buf, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&rows_buf);
        return NULL;
    }
    if (PyObject_GetBuffer(table_obj, &table_buf, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&old_buf);
        PyBuffer_Release(&rows_buf);
        return NULL;
    }
    if (PyObject_GetBuffer(old_of_obj, &out_buf, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&table_buf);
        PyBuffer_Release(&old_buf);
        PyBuffer_Release(&rows_buf);
        return NULL;
    }
    PyObject *result = NULL, *joiners = NULL, *leavers = NULL;
    const Py_ssize_t n = PyTuple_GET_SIZE(entries), n_old = PyTuple_GET_SIZE(old_entries);
    if (rows_buf.itemsize != 8 || old_buf.itemsize != 8 || table_buf.itemsize != 8 || out_buf.itemsize != 8 ||
        rows_buf.len / 8 < n || old_buf.len / 8 < n_old || out_buf.len / 8 < n) {
        PyErr_SetString(PyExc_TypeError, "pat_survivors: rows, old_rows, table and old_of must be int64 buffers, "
                                         "as long as the entries");
        goto done;
    }
    const int64_t *rows = (const int64_t *)rows_buf.buf, *old_rows = (const int64_t *)old_buf.buf;
    int64_t *table = (int64_t *)table_buf.buf, *old_of = (int64_t *)out_buf.buf;
    const int64_t slots = (int64_t)(table_buf.len / 8);
    int64_t top = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (rows[i] < 0) top = INT64_MAX;
        else if (rows[i] > top) top = rows[i];
    }
    for (Py_ssize_t k = 0; k < n_old; k++) {
        if (old_rows[k] < 0) top = INT64_MAX;
        else if (old_rows[k] > top) top = old_rows[k];
    }
    if (top >= slots) {
        result = PyLong_FromLongLong(top == INT64_MAX ? 0 : -(top + 1));
        goto done;
    }
    for (Py_ssize_t k = 0; k < n_old; k++) table[old_rows[k]] = k;
    joiners = PyList_New(0);
    leavers = PyList_New(0);
    if (joiners == NULL || leavers == NULL) goto reset;
    int64_t last = -1;
    int ordered = 1;
    for (Py_ssize_t i = 0; i < n; i++) {
        const int64_t k = table[rows[i]];
        if (k >= 0 && PyTuple_GET_ITEM(entries, i) == PyTuple_GET_ITEM(old_entries, k)) {
            old_of[i] = k;
            table[rows[i]] = -(k + 2); /* old request k survived */
            if (k <= last) ordered = 0;
            last = k;
        } else {
            old_of[i] = -1;
            if (append_row(joiners, i) < 0) goto reset;
        }
    }
    for (Py_ssize_t k = 0; k < n_old; k++) {
        if (table[old_rows[k]] != -(k + 2) && append_row(leavers, k) < 0) goto reset;
    }
    result = Py_BuildValue("(OOO)", joiners, leavers, ordered ? Py_True : Py_False);
reset:
    for (Py_ssize_t k = 0; k < n_old; k++) table[old_rows[k]] = -1;
done:
    Py_XDECREF(joiners);
    Py_XDECREF(leavers);
    PyBuffer_Release(&out_buf);
    PyBuffer_Release(&table_buf);
    PyBuffer_Release(&old_buf);
    PyBuffer_Release(&rows_buf);
    return result;
}

/* names[k] = the interned string text[k] for k < count, once (names[0] set marks it done); -1 on failure */
static int interned(PyObject **names, const char *const *text, int count) {
    if (names[0] != NULL) return 0;
    for (int k = count - 1; k >= 0; k--) {  /* names[0] last: set only when all are */
        names[k] = PyUnicode_InternFromString(text[k]);
        if (names[k] == NULL) return -1;
    }
    return 0;
}

/* getattr(obj, name, None) as a new reference; NULL with the exception set for errors other than AttributeError */
static PyObject *attr_or_none(PyObject *obj, PyObject *name) {
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL && PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    return v;
}

/* memo[id(node)] as a borrowed reference, NULL where absent (*err set on a failed lookup) */
static PyObject *memo_get(PyObject *memo, PyObject *node, int *err) {
    PyObject *key = PyLong_FromVoidPtr(node);
    if (key == NULL) {
        *err = 1;
        return NULL;
    }
    PyObject *v = PyDict_GetItemWithError(memo, key);
    Py_DECREF(key);
    if (v == NULL && PyErr_Occurred()) *err = 1;
    return v;
}

/* memo[id(node)] = value; -1 on failure */
static int memo_set(PyObject *memo, PyObject *node, PyObject *value) {
    PyObject *key = PyLong_FromVoidPtr(node);
    if (key == NULL) return -1;
    const int rc = PyDict_SetItem(memo, key, value);
    Py_DECREF(key);
    return rc;
}

/* int(obj.method()) as a new reference, NULL on error */
static PyObject *called_int(PyObject *obj, PyObject *method) {
    PyObject *v = PyObject_CallMethodNoArgs(obj, method);
    if (v == NULL) return NULL;
    PyObject *i = PyNumber_Long(v);
    Py_DECREF(v);
    return i;
}

/* ((int(node.id), int(value.data_ptr()), int(value.numel())),) + tail as a new reference, or a new reference to None
   where value is None or has no data_ptr (hasattr's reading: an AttributeError); NULL on error */
static PyObject *extended(PyObject *node, PyObject *value, PyObject *tail, PyObject *const *names) {
    if (value == Py_None) Py_RETURN_NONE;
    PyObject *data_ptr = PyObject_GetAttr(value, names[2]);
    if (data_ptr == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) return NULL;
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    Py_DECREF(data_ptr);
    PyObject *id_attr = PyObject_GetAttr(node, names[3]);
    if (id_attr == NULL) return NULL;
    PyObject *item[3] = {PyNumber_Long(id_attr), NULL, NULL};
    Py_DECREF(id_attr);
    if (item[0] != NULL) item[1] = called_int(value, names[2]);
    if (item[1] != NULL) item[2] = called_int(value, names[4]);
    if (item[2] == NULL) {
        for (int k = 0; k < 3; k++) Py_XDECREF(item[k]);
        return NULL;
    }
    PyObject *own = PyTuple_New(3);
    if (own == NULL) {
        for (int k = 0; k < 3; k++) Py_DECREF(item[k]);
        return NULL;
    }
    for (int k = 0; k < 3; k++) PyTuple_SET_ITEM(own, k, item[k]);
    const Py_ssize_t d = PyTuple_GET_SIZE(tail);
    PyObject *sig = PyTuple_New(d + 1);
    if (sig == NULL) {
        Py_DECREF(own);
        return NULL;
    }
    PyTuple_SET_ITEM(sig, 0, own);
    for (Py_ssize_t j = 0; j < d; j++) {
        PyObject *t = PyTuple_GET_ITEM(tail, j);
        Py_INCREF(t);
        PyTuple_SET_ITEM(sig, j + 1, t);
    }
    return sig;
}

/* The signature of one node (chain_table.chain_signature), reading and writing memo; path is an empty scratch list
   (left empty); a new reference, NULL on error */
static PyObject *signature_of(PyObject *node, PyObject *root, PyObject *memo, PyObject *path,
                              PyObject *const *names) {
    int err = 0;
    PyObject *tail = NULL;  /* new reference once set */
    PyObject *cur = node;
    Py_INCREF(cur);
    while (cur != Py_None && cur != root) {
        PyObject *known = memo_get(memo, cur, &err);
        if (err) goto fail;
        if (known != NULL) {
            tail = known;
            Py_INCREF(tail);
            break;
        }
        if (PyList_Append(path, cur) < 0) goto fail;
        PyObject *parent = attr_or_none(cur, names[0]);
        if (parent == NULL) goto fail;
        Py_DECREF(cur);
        cur = parent;
    }
    if (tail == NULL) {  /* the walk ended at root (an empty chain above) or at None (unreadable) */
        tail = cur == root ? PyTuple_New(0) : Py_None;
        if (tail == NULL) goto fail;
        if (tail == Py_None) Py_INCREF(tail);
    }
    Py_DECREF(cur);
    cur = NULL;
    for (Py_ssize_t j = PyList_GET_SIZE(path) - 1; j >= 0; j--) {  /* root side first */
        PyObject *n = PyList_GET_ITEM(path, j);
        if (tail != Py_None) {
            PyObject *value = attr_or_none(n, names[1]);
            if (value == NULL) goto fail;
            PyObject *sig = extended(n, value, tail, names);
            Py_DECREF(value);
            if (sig == NULL) goto fail;
            Py_DECREF(tail);
            tail = sig;
        }
        if (memo_set(memo, n, tail) < 0) goto fail;
    }
    if (PyList_SetSlice(path, 0, PyList_GET_SIZE(path), NULL) < 0) goto fail;
    return tail;
fail:
    Py_XDECREF(cur);
    Py_XDECREF(tail);
    PyList_SetSlice(path, 0, PyList_GET_SIZE(path), NULL);
    return NULL;
}

PyObject *pat_chain_signatures(PyObject *nodes, PyObject *root, PyObject *memo) {
    if (!PyList_Check(nodes) || !PyDict_Check(memo)) {
        PyErr_SetString(PyExc_TypeError, "pat_chain_signatures: nodes must be a list and memo a dict");
        return NULL;
    }
    static PyObject *names[5];
    static const char *const text[5] = {"parent", "value", "data_ptr", "id", "numel"};
    if (interned(names, text, 5) < 0) return NULL;
    const Py_ssize_t n = PyList_GET_SIZE(nodes);
    PyObject *out = PyList_New(n), *path = PyList_New(0);
    if (out == NULL || path == NULL) {
        Py_XDECREF(out);
        Py_XDECREF(path);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *node = PyList_GET_ITEM(nodes, i);
        int err = 0;
        PyObject *sig = memo_get(memo, node, &err);
        if (err) goto fail;
        if (sig != NULL) {
            Py_INCREF(sig);
        } else {
            sig = signature_of(node, root, memo, path, names);
            if (sig == NULL) goto fail;
        }
        PyList_SET_ITEM(out, i, sig);
    }
    Py_DECREF(path);
    return out;
fail:
    Py_DECREF(out);  /* (unset items are NULL: list dealloc skips them) */
    Py_DECREF(path);
    return NULL;
}

/* The int64 buffer view of obj (C-contiguous, 8-byte signed integers) of n entries (any number where n < 0); 0 on
   success, -1 (no exception set) where it is not one */
static int int64_view(PyObject *obj, Py_buffer *view, Py_ssize_t n, int writable) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0)) < 0) {
        PyErr_Clear();
        return -1;
    }
    const char *f = view->format;
    if (view->itemsize != 8 || f == NULL || (strcmp(f, "l") != 0 && strcmp(f, "q") != 0 && strcmp(f, "<q") != 0 &&
                                             strcmp(f, "<l") != 0 && strcmp(f, "=q") != 0) ||
        (n >= 0 && view->len != n * 8)) {
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* the int at sig item item[at], -1 with *bad set where it is not an int (or does not fit int64) */
static int64_t sig_int(PyObject *item, Py_ssize_t at, int *bad) {
    if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 3) {
        *bad = 1;
        return -1;
    }
    const long long v = PyLong_AsLongLong(PyTuple_GET_ITEM(item, at));
    if (v == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        *bad = 1;
    }
    return (int64_t)v;
}

static PyObject *pick_entries(PyObject *changed, PyObject *cls, PyObject *const *objs, const int64_t *starts,
                              const int64_t *cached);

PyObject *pat_wave_entries(PyObject *changed, PyObject *cls, PyObject *keys_obj, PyObject *lengths_obj,
                           PyObject *depths_obj, PyObject *starts_obj, PyObject *cached_obj) {
    if (!PyList_Check(changed) || !PyType_Check(cls)) Py_RETURN_NOTIMPLEMENTED;
    const Py_ssize_t n = PyList_GET_SIZE(changed);
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *c = PyList_GET_ITEM(changed, i);
        if (!PyTuple_Check(c) || PyTuple_GET_SIZE(c) != 4 || !PyTuple_Check(PyTuple_GET_ITEM(c, 3)))
            Py_RETURN_NOTIMPLEMENTED;
        total += PyTuple_GET_SIZE(PyTuple_GET_ITEM(c, 3));
    }
    Py_buffer views[5];
    PyObject *objs[5] = {keys_obj, lengths_obj, depths_obj, starts_obj, cached_obj};
    const Py_ssize_t sizes[5] = {total, total, n, n, n};
    int held = 0;
    for (; held < 5; held++)
        if (int64_view(objs[held], &views[held], sizes[held], held != 2) < 0) break;
    int bad = held < 5;
    int64_t *keys = NULL, *lengths = NULL, *starts = NULL, *cached = NULL;
    const int64_t *depths = NULL;
    if (!bad) {
        keys = views[0].buf;
        lengths = views[1].buf;
        depths = views[2].buf;
        starts = views[3].buf;
        cached = views[4].buf;
    }
    Py_ssize_t at = 0;
    for (Py_ssize_t i = 0; i < n && !bad; i++) {
        PyObject *sig = PyTuple_GET_ITEM(PyList_GET_ITEM(changed, i), 3);
        const Py_ssize_t d = PyTuple_GET_SIZE(sig);
        if (depths[i] != d) {
            bad = 1;
            break;
        }
        int64_t sum = 0;
        starts[i] = at;
        for (Py_ssize_t j = 0; j < d && !bad; j++) {
            PyObject *item = PyTuple_GET_ITEM(sig, d - 1 - j);  /* root first */
            keys[at + j] = sig_int(item, 0, &bad);
            lengths[at + j] = sig_int(item, 2, &bad);
            sum += lengths[at + j];
        }
        cached[i] = sum;
        at += d;
    }
    if (bad) {
        for (int k = 0; k < held; k++) PyBuffer_Release(&views[k]);
        Py_RETURN_NOTIMPLEMENTED;
    }
    PyBuffer_Release(&views[0]);  /* keys and lengths: no export held while they become read-only below */
    PyBuffer_Release(&views[1]);
    PyObject *out = pick_entries(changed, cls, objs, starts, cached);
    for (int k = 2; k < 5; k++) PyBuffer_Release(&views[k]);
    return out;
}

/* pat_wave_entries' second half: keys and lengths (objs[0], objs[1]) made read-only, then the entries */
static PyObject *pick_entries(PyObject *changed, PyObject *cls, PyObject *const *objs, const int64_t *starts,
                              const int64_t *cached) {
    const Py_ssize_t n = PyList_GET_SIZE(changed);
    static PyObject *names[7];
    static const char *const text[7] = {"rid", "generation", "signature", "keys", "lengths", "cached_len", "setflags"};
    if (interned(names, text, 7) < 0) return NULL;
    for (int k = 0; k < 2; k++) {  /* read-only bases: their slices are read-only too */
        PyObject *r = PyObject_CallMethodOneArg(objs[k], names[6], Py_False);
        if (r == NULL) return NULL;
        Py_DECREF(r);
    }
    PyObject *empty = PyTuple_New(0), *out = PyList_New(n);
    if (empty == NULL || out == NULL) {
        Py_XDECREF(empty);
        Py_XDECREF(out);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *c = PyList_GET_ITEM(changed, i);
        const Py_ssize_t s = (Py_ssize_t)starts[i], e = s + PyTuple_GET_SIZE(PyTuple_GET_ITEM(c, 3));
        PyObject *entry = PyBaseObject_Type.tp_new((PyTypeObject *)cls, empty, NULL);
        PyObject *vals[6] = {NULL};
        int failed = entry == NULL;
        if (!failed) {
            vals[0] = PyTuple_GET_ITEM(c, 1);
            vals[1] = PyTuple_GET_ITEM(c, 2);
            vals[2] = PyTuple_GET_ITEM(c, 3);
            Py_INCREF(vals[0]);
            Py_INCREF(vals[1]);
            Py_INCREF(vals[2]);
            vals[3] = PySequence_GetSlice(objs[0], s, e);
            vals[4] = PySequence_GetSlice(objs[1], s, e);
            vals[5] = PyLong_FromLongLong(cached[i]);
            for (int k = 0; k < 6 && !failed; k++)
                failed = vals[k] == NULL || PyObject_GenericSetAttr(entry, names[k], vals[k]) < 0;
        }
        for (int k = 0; k < 6; k++) Py_XDECREF(vals[k]);
        if (failed) {
            Py_XDECREF(entry);
            Py_DECREF(out);
            Py_DECREF(empty);
            return NULL;
        }
        PyList_SET_ITEM(out, i, entry);
    }
    Py_DECREF(empty);
    return out;
}

/* Discard row from rows_of_node[node id] for every node of sig (deleting emptied sets); -1 on error */
static int unindex(PyObject *rows_of_node, PyObject *row, PyObject *sig) {
    for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(sig); j++) {
        PyObject *key = PyTuple_GET_ITEM(PyTuple_GET_ITEM(sig, j), 0);
        PyObject *rows = PyDict_GetItemWithError(rows_of_node, key);
        if (rows == NULL) {
            if (PyErr_Occurred()) return -1;
            continue;
        }
        if (PySet_Discard(rows, row) < 0) return -1;
        if (PySet_GET_SIZE(rows) == 0 && PyDict_DelItem(rows_of_node, key) < 0) return -1;
    }
    return 0;
}

/* Add row to rows_of_node[node id] for every node of sig (a new set where there is none); -1 on error */
static int index_row(PyObject *rows_of_node, PyObject *row, PyObject *sig) {
    for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(sig); j++) {
        PyObject *key = PyTuple_GET_ITEM(PyTuple_GET_ITEM(sig, j), 0);
        PyObject *rows = PyDict_GetItemWithError(rows_of_node, key);
        if (rows == NULL) {
            if (PyErr_Occurred()) return -1;
            PyObject *fresh = PySet_New(NULL);
            if (fresh == NULL) return -1;
            const int rc = PySet_Add(fresh, row) < 0 ? -1 : PyDict_SetItem(rows_of_node, key, fresh);
            Py_DECREF(fresh);
            if (rc < 0) return -1;
        } else if (PySet_Add(rows, row) < 0) {
            return -1;
        }
    }
    return 0;
}

/* Whether every signature item of sig is a tuple of 3 (what the loops above read) */
static int signature_shaped(PyObject *sig) {
    if (!PyTuple_Check(sig)) return 0;
    for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(sig); j++) {
        PyObject *item = PyTuple_GET_ITEM(sig, j);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 3) return 0;
    }
    return 1;
}

PyObject *pat_set_wave(PyObject *entries, PyObject *row_entry, PyObject *rows_of_node, PyObject *rows,
                       PyObject *made) {
    if (!PyDict_Check(entries) || !PyList_Check(row_entry) || !PyDict_Check(rows_of_node) || !PyList_Check(rows) ||
        !PyList_Check(made) || PyList_GET_SIZE(rows) != PyList_GET_SIZE(made))
        Py_RETURN_NOTIMPLEMENTED;
    static PyObject *names[1];
    static const char *const text[1] = {"signature"};
    if (interned(names, text, 1) < 0) return NULL;
    PyObject *const signature_name = names[0];
    const Py_ssize_t n = PyList_GET_SIZE(rows), slots = PyList_GET_SIZE(row_entry);
    for (Py_ssize_t i = 0; i < n; i++) {  /* checked first: NotImplemented changes nothing */
        PyObject *row = PyList_GET_ITEM(rows, i);
        if (!PyLong_CheckExact(row)) Py_RETURN_NOTIMPLEMENTED;
        const long long r = PyLong_AsLongLong(row);
        if (r < 0 || r >= slots) {
            PyErr_Clear();
            Py_RETURN_NOTIMPLEMENTED;
        }
        PyObject *sig = PyObject_GetAttr(PyList_GET_ITEM(made, i), signature_name);
        if (sig == NULL) return NULL;
        const int shaped = signature_shaped(sig);
        Py_DECREF(sig);
        if (!shaped) Py_RETURN_NOTIMPLEMENTED;
        PyObject *old = PyDict_GetItemWithError(entries, row);
        if (old == NULL && PyErr_Occurred()) return NULL;
        if (old != NULL && old != Py_None) {
            PyObject *old_sig = PyObject_GetAttr(old, signature_name);
            if (old_sig == NULL) return NULL;
            const int old_shaped = signature_shaped(old_sig);
            Py_DECREF(old_sig);
            if (!old_shaped) Py_RETURN_NOTIMPLEMENTED;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *row = PyList_GET_ITEM(rows, i), *entry = PyList_GET_ITEM(made, i);
        PyObject *old = PyDict_GetItemWithError(entries, row);
        if (old == NULL && PyErr_Occurred()) return NULL;
        if (old != NULL && old != Py_None) {
            PyObject *old_sig = PyObject_GetAttr(old, signature_name);
            if (old_sig == NULL) return NULL;
            const int rc = unindex(rows_of_node, row, old_sig);
            Py_DECREF(old_sig);
            if (rc < 0) return NULL;
        }
        if (PyDict_SetItem(entries, row, entry) < 0) return NULL;
        Py_INCREF(entry);
        if (PyList_SetItem(row_entry, (Py_ssize_t)PyLong_AsLongLong(row), entry) < 0) return NULL;
        PyObject *sig = PyObject_GetAttr(entry, signature_name);
        if (sig == NULL) return NULL;
        const int rc = index_row(rows_of_node, row, sig);
        Py_DECREF(sig);
        if (rc < 0) return NULL;
    }
    Py_RETURN_NONE;
}

PyObject *pat_tally_refs(PyObject *req_obj, PyObject *keys_obj, PyObject *tokens_obj) {
    Py_buffer rb, kb, tb;
    if (int64_view(keys_obj, &kb, -1, 0) < 0) Py_RETURN_NOTIMPLEMENTED;
    if (int64_view(tokens_obj, &tb, kb.len / 8, 0) < 0) {
        PyBuffer_Release(&kb);
        Py_RETURN_NOTIMPLEMENTED;
    }
    if (int64_view(req_obj, &rb, kb.len / 8, 0) < 0) {
        PyBuffer_Release(&kb);
        PyBuffer_Release(&tb);
        Py_RETURN_NOTIMPLEMENTED;
    }
    const Py_ssize_t n = kb.len / 8;
    const int64_t *key = kb.buf, *tok = tb.buf, *req = rb.buf;
    Py_ssize_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    /* open addressing over (key, tokens) pairs: slot -> index of the pair's first occurrence + 1 (0: empty) */
    Py_ssize_t *slot = calloc((size_t)cap, sizeof(Py_ssize_t));
    Py_ssize_t *first = malloc(sizeof(Py_ssize_t) * (size_t)(n ? n : 1));  /* distinct pairs, first-seen order */
    int64_t *count = malloc(sizeof(int64_t) * (size_t)(n ? n : 1));  /* per distinct pair */
    int64_t *starts = malloc(sizeof(int64_t) * (size_t)(n ? n : 1));  /* per distinct pair: paths starting there */
    Py_ssize_t *start_order = malloc(sizeof(Py_ssize_t) * (size_t)(n ? n : 1));  /* pairs first seen as a start */
    PyObject *refs = NULL, *firsts = NULL, *out = NULL;
    if (slot == NULL || first == NULL || count == NULL || starts == NULL || start_order == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t distinct = 0, started = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t h = (uint64_t)key[i] * 0x9E3779B97F4A7C15ull ^ (uint64_t)tok[i] * 0xC2B2AE3D27D4EB4Full;
        h ^= h >> 29;
        Py_ssize_t at = (Py_ssize_t)(h & (uint64_t)(cap - 1));
        Py_ssize_t d;
        for (;;) {
            const Py_ssize_t s = slot[at];
            if (s == 0) {
                slot[at] = distinct + 1;
                first[distinct] = i;
                count[distinct] = 1;
                starts[distinct] = 0;
                d = distinct++;
                break;
            }
            const Py_ssize_t j = first[s - 1];
            if (key[j] == key[i] && tok[j] == tok[i]) {
                count[s - 1]++;
                d = s - 1;
                break;
            }
            at = (at + 1) & (cap - 1);
        }
        if (i == 0 || req[i] != req[i - 1]) {  /* a path's first node (paths are root first) */
            if (starts[d]++ == 0) start_order[started++] = d;
        }
    }
    refs = PyDict_New();
    firsts = PyDict_New();
    if (refs == NULL || firsts == NULL) goto done;
    long long total = 0;
    for (Py_ssize_t d = 0; d < distinct + started; d++) {
        const int is_first = d >= distinct;
        const Py_ssize_t pair = is_first ? start_order[d - distinct] : d;
        const Py_ssize_t i = first[pair];
        PyObject *k = Py_BuildValue("(LL)", (long long)key[i], (long long)tok[i]);
        PyObject *c = PyLong_FromLongLong(is_first ? starts[pair] : count[pair]);
        const int rc = k == NULL || c == NULL ? -1 : PyDict_SetItem(is_first ? firsts : refs, k, c);
        Py_XDECREF(k);
        Py_XDECREF(c);
        if (rc < 0) goto done;
        if (!is_first) total += tok[i];
    }
    out = Py_BuildValue("(OLO)", refs, total, firsts);
done:
    Py_XDECREF(refs);
    Py_XDECREF(firsts);
    free(slot);
    free(first);
    free(count);
    free(starts);
    free(start_order);
    PyBuffer_Release(&kb);
    PyBuffer_Release(&tb);
    PyBuffer_Release(&rb);
    return out;
}

/* ---- pat_publish_read and pat_tally_changes: a changed batch's rows, read and written in one call ---- */

/* The table attributes pat_publish_read works on (new references, read once per call) */
enum { T_ENTRIES, T_READ_AS, T_ROW_GEN, T_ROW_RID, T_ROW_ENTRY, T_ROWS_OF_NODE, T_ROW_PATHS, T_COUNT };

typedef struct {
    PyObject *obj[T_COUNT];
    PyObject *const *names;  /* pat_publish_read's interned names, see its text[] */
    int64_t *row_gen;        /* T_ROW_GEN's buffer */
    Py_ssize_t slots;        /* its length */
    /* the row paths' (T_ROW_PATHS) pending dict and depth / cached arrays, read on the first write and again after
       _RowPaths._room replaced them; their version moved once at the end by the writes made */
    int paths_open;
    PyObject *pending;
    Py_buffer depth, cached;
    int64_t paths_rows, paths_depth;
    Py_ssize_t paths_sets;
} ReadState;

static int int64_order(const void *a, const void *b) {
    const int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Whether v is in sorted[0..n) (ascending) */
static int sorted_has(const int64_t *sorted, Py_ssize_t n, int64_t v) {
    return n > 0 && bsearch(&v, sorted, (size_t)n, sizeof(int64_t), int64_order) != NULL;
}

/* int64 of a Python int, -1 with *bad set where it is not one (the error cleared) */
static int64_t as_row(PyObject *v, int *bad) {
    if (!PyLong_Check(v)) {
        *bad = 1;
        return -1;
    }
    const long long r = PyLong_AsLongLong(v);
    if (r == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        *bad = 1;
    }
    return (int64_t)r;
}

/* dict.pop(key, None) as a new reference (Py_None where absent); NULL on error */
static PyObject *dict_pop(PyObject *dict, PyObject *key) {
    PyObject *v = PyDict_GetItemWithError(dict, key);
    if (v == NULL) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    Py_INCREF(v);
    if (PyDict_DelItem(dict, key) < 0) {
        Py_DECREF(v);
        return NULL;
    }
    return v;
}

/* The signature of entry (a new reference); NULL on error */
static PyObject *signature_of_entry(ReadState *s, PyObject *entry) { return PyObject_GetAttr(entry, s->names[11]); }

/* ChainTable._pop_entry(row): the row's entry, read and generation forgotten, its row path cleared and the node index
   moved off its nodes; -1 on error */
static int pop_entry(ReadState *s, PyObject *row, int64_t r) {
    PyObject *old = dict_pop(s->obj[T_ENTRIES], row);
    if (old == NULL) return -1;
    int rc = 0;
    if (r < PyList_GET_SIZE(s->obj[T_ROW_ENTRY])) {
        Py_INCREF(Py_None);
        rc = PyList_SetItem(s->obj[T_ROW_ENTRY], (Py_ssize_t)r, Py_None);
    }
    if (rc == 0) {
        PyObject *read = dict_pop(s->obj[T_READ_AS], row);
        if (read == NULL) rc = -1;
        Py_XDECREF(read);
    }
    if (rc == 0 && r < s->slots) s->row_gen[r] = -1;
    if (rc == 0 && old != Py_None) {
        PyObject *cleared = PyObject_CallMethodOneArg(s->obj[T_ROW_PATHS], s->names[12], row);  /* _RowPaths.clear */
        PyObject *sig = cleared == NULL ? NULL : signature_of_entry(s, old);
        rc = sig == NULL ? -1 : unindex(s->obj[T_ROWS_OF_NODE], row, sig);
        Py_XDECREF(sig);
        Py_XDECREF(cleared);
    }
    Py_DECREF(old);
    return rc;
}

/* 1 where a and b differ (Python's !=), 0 where not, -1 on error */
static int differ(PyObject *a, PyObject *b) { return PyObject_RichCompareBool(a, b, Py_NE); }

/* Whether the old entry (borrowed, NULL or None: none) is not (rid, gen, sig): ChainTable._reread's test; -1 on
   error */
static int entry_changed(ReadState *s, PyObject *old, PyObject *rid, PyObject *gen, PyObject *sig) {
    if (old == NULL || old == Py_None) return 1;
    PyObject *const *names = s->names;
    PyObject *const which[3] = {names[13], names[14], names[11]};  /* rid, generation, signature */
    PyObject *const now[3] = {rid, gen, sig};
    for (int k = 0; k < 3; k++) {
        PyObject *v = PyObject_GetAttr(old, which[k]);
        if (v == NULL) return -1;
        const int d = differ(v, now[k]);
        Py_DECREF(v);
        if (d != 0) return d;
    }
    return 0;
}

/* obj.<name> += by (a Python int attribute); -1 on error */
static int add_to(PyObject *obj, PyObject *name, Py_ssize_t by) {
    PyObject *step = PyLong_FromSsize_t(by), *v = step == NULL ? NULL : PyObject_GetAttr(obj, name);
    PyObject *next = v == NULL ? NULL : PyNumber_Add(v, step);
    const int rc = next == NULL ? -1 : PyObject_SetAttr(obj, name, next);
    Py_XDECREF(step);
    Py_XDECREF(v);
    Py_XDECREF(next);
    return rc;
}

/* The row paths' arrays and pending dict let go (before _RowPaths._room replaces them, and at the end) */
static void paths_close(ReadState *s) {
    if (!s->paths_open) return;
    PyBuffer_Release(&s->depth);
    PyBuffer_Release(&s->cached);
    Py_CLEAR(s->pending);
    s->paths_open = 0;
}

/* The row paths' keys shape, pending dict and depth / cached arrays read; -1 on error */
static int paths_read(ReadState *s) {
    PyObject *const *names = s->names;
    PyObject *paths = s->obj[T_ROW_PATHS];
    PyObject *keys = PyObject_GetAttr(paths, names[15]);
    PyObject *shape = keys == NULL ? NULL : PyObject_GetAttr(keys, names[16]);
    Py_XDECREF(keys);
    if (shape == NULL) return -1;
    int bad = !PyTuple_Check(shape) || PyTuple_GET_SIZE(shape) != 2;
    s->paths_rows = bad ? 0 : as_row(PyTuple_GET_ITEM(shape, 0), &bad);
    s->paths_depth = bad ? 0 : as_row(PyTuple_GET_ITEM(shape, 1), &bad);
    Py_DECREF(shape);
    PyObject *depth = bad ? NULL : PyObject_GetAttr(paths, names[18]);
    PyObject *cached = depth == NULL ? NULL : PyObject_GetAttr(paths, names[19]);
    int held = 0;
    if (cached != NULL && int64_view(depth, &s->depth, -1, 1) == 0) {
        held = 1;
        if (int64_view(cached, &s->cached, -1, 1) == 0) held = 2;
        else PyBuffer_Release(&s->depth);
    }
    Py_XDECREF(depth);
    Py_XDECREF(cached);
    if (held < 2 || s->depth.len / 8 < s->paths_rows || s->cached.len / 8 < s->paths_rows) {
        if (held == 2) {
            PyBuffer_Release(&s->depth);
            PyBuffer_Release(&s->cached);
        }
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "pat_publish_read: the row paths' arrays are not int64 rows as keys has");
        return -1;
    }
    s->pending = PyObject_GetAttr(paths, names[17]);
    if (s->pending == NULL || !PyDict_Check(s->pending)) {
        PyBuffer_Release(&s->depth);
        PyBuffer_Release(&s->cached);
        if (s->pending != NULL)
            PyErr_SetString(PyExc_TypeError, "pat_publish_read: the row paths' pending is not a dict");
        Py_CLEAR(s->pending);
        return -1;
    }
    s->paths_open = 1;
    return 0;
}

/* _RowPaths.set(row, entry) for an entry of d nodes and cached_len tokens (its version moved at the end, see
   paths_done); -1 on error */
static int row_paths_set(ReadState *s, PyObject *row, int64_t r, PyObject *entry, Py_ssize_t d, int64_t cached_len) {
    if (!s->paths_open && paths_read(s) < 0) return -1;
    if (r >= s->paths_rows || d > s->paths_depth) {  /* _RowPaths._room(row + 1, d): new arrays */
        paths_close(s);
        PyObject *grown = PyObject_CallMethod(s->obj[T_ROW_PATHS], "_room", "Ln", (long long)(r + 1), d);
        if (grown == NULL) return -1;
        Py_DECREF(grown);
        if (paths_read(s) < 0) return -1;
    }
    if (PyDict_SetItem(s->pending, row, entry) < 0) return -1;
    ((int64_t *)s->depth.buf)[r] = (int64_t)d;
    ((int64_t *)s->cached.buf)[r] = cached_len;
    s->paths_sets++;
    return 0;
}

/* The row paths let go and their version moved by the writes made (_RowPaths.set counts one per write); -1 on error */
static int paths_done(ReadState *s) {
    paths_close(s);
    const Py_ssize_t sets = s->paths_sets;
    s->paths_sets = 0;
    return sets == 0 ? 0 : add_to(s->obj[T_ROW_PATHS], s->names[20], sets);
}

/* ChainTable._set_entry(row, entry) with the signature sig of entry; -1 on error */
static int set_entry(ReadState *s, PyObject *row, int64_t r, PyObject *entry, PyObject *sig, int64_t cached_len) {
    PyObject *old = PyDict_GetItemWithError(s->obj[T_ENTRIES], row);
    if (old == NULL && PyErr_Occurred()) return -1;
    if (old != NULL) {
        PyObject *old_sig = signature_of_entry(s, old);
        const int rc = old_sig == NULL ? -1 : unindex(s->obj[T_ROWS_OF_NODE], row, old_sig);
        Py_XDECREF(old_sig);
        if (rc < 0) return -1;
    }
    if (PyDict_SetItem(s->obj[T_ENTRIES], row, entry) < 0) return -1;
    Py_INCREF(entry);
    if (PyList_SetItem(s->obj[T_ROW_ENTRY], (Py_ssize_t)r, entry) < 0) return -1;
    if (row_paths_set(s, row, r, entry, PyTuple_GET_SIZE(sig), cached_len) < 0) return -1;
    return index_row(s->obj[T_ROWS_OF_NODE], row, sig);
}

/* A ChainEntry of (rid, gen, sig) as its dataclass __init__ and __post_init__ leave it (cached_len: the sum of the
   signature's tokens, in *cached_len too), made without running them; NULL on error */
static PyObject *new_entry(ReadState *s, PyObject *cls, PyObject *rid, PyObject *gen, PyObject *sig,
                           int64_t *cached_len) {
    PyObject *const *names = s->names;
    int64_t sum = 0;
    int bad = 0;
    for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(sig) && !bad; j++) sum += sig_int(PyTuple_GET_ITEM(sig, j), 2, &bad);
    if (bad) {
        PyErr_SetString(PyExc_TypeError, "pat_publish_read: a signature item is not 3 ints");
        return NULL;
    }
    PyObject *empty = PyTuple_New(0);
    if (empty == NULL) return NULL;
    PyObject *entry = PyBaseObject_Type.tp_new((PyTypeObject *)cls, empty, NULL);
    Py_DECREF(empty);
    PyObject *cached = entry == NULL ? NULL : PyLong_FromLongLong(sum);
    if (cached == NULL || PyObject_GenericSetAttr(entry, names[13], rid) < 0 ||
        PyObject_GenericSetAttr(entry, names[14], gen) < 0 || PyObject_GenericSetAttr(entry, names[11], sig) < 0 ||
        PyObject_GenericSetAttr(entry, names[21], cached) < 0) {
        Py_XDECREF(cached);
        Py_XDECREF(entry);
        return NULL;
    }
    Py_DECREF(cached);
    *cached_len = sum;
    return entry;
}

/* The rows of hit (a set, or NULL: none) and of the list recached, as int64 into marked (count in *m; marked holds
   room for them all); -1 (nothing written) where one is not an int */
static int marked_rows(PyObject *hit, PyObject *recached, int64_t *marked, Py_ssize_t *m) {
    int bad = 0;
    *m = 0;
    if (hit != NULL) {
        PyObject *it = PyObject_GetIter(hit), *v;
        if (it == NULL) return -1;
        while ((v = PyIter_Next(it)) != NULL) {
            marked[(*m)++] = as_row(v, &bad);
            Py_DECREF(v);
        }
        Py_DECREF(it);
        if (PyErr_Occurred()) return -1;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(recached); i++)
        marked[(*m)++] = as_row(PyList_GET_ITEM(recached, i), &bad);
    return bad ? -1 : 0;
}

/* set().union(*(rows_of_node.get(node id, ()) for node id in moved)) as a new set; NULL on error */
static PyObject *hit_rows(PyObject *rows_of_node, PyObject *moved) {
    PyObject *hit = PySet_New(NULL);
    if (hit == NULL) return NULL;
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(moved); k++) {
        PyObject *rows = PyDict_GetItemWithError(rows_of_node, PyTuple_GET_ITEM(moved, k));
        if (rows == NULL) {
            if (PyErr_Occurred()) goto fail;
            continue;
        }
        PyObject *it = PyObject_GetIter(rows), *v;
        if (it == NULL) goto fail;
        while ((v = PyIter_Next(it)) != NULL) {
            const int rc = PySet_Add(hit, v);
            Py_DECREF(v);
            if (rc < 0) break;
        }
        Py_DECREF(it);
        if (PyErr_Occurred()) goto fail;
    }
    return hit;
fail:
    Py_DECREF(hit);
    return NULL;
}

static PyObject *publish_read(ReadState *s, PyObject *reqs, const int64_t *rows, const int64_t *gens, Py_ssize_t n,
                              PyObject *root, PyObject *hit, const int64_t *marked, Py_ssize_t m, PyObject *cls,
                              Py_ssize_t *pos, Py_ssize_t k);

PyObject *pat_publish_read(PyObject *table, PyObject *reqs, PyObject *rows_obj, PyObject *gens_obj, PyObject *root,
                           PyObject *moved, PyObject *recached, PyObject *cls, int64_t wave) {
    static PyObject *names[25];
    static const char *const text[25] = {
        "parent", "value", "data_ptr", "id", "numel",  /* signature_of's, in its order */
        "entries", "_read_as", "_row_gen", "_row_rid", "_row_entry", "_rows_of_node",
        "signature", "clear", "rid", "generation", "keys", "shape", "_pending", "depth", "cached", "version",
        "cached_len", "_row_paths", "req_pool_idx", "last_node"};
    if (interned(names, text, 25) < 0) return NULL;
    if (!PyList_Check(reqs) || !PyTuple_Check(moved) || !PyList_Check(recached) || !PyType_Check(cls))
        Py_RETURN_NOTIMPLEMENTED;
    ReadState s = {{NULL}, names, NULL, 0, 0, NULL, {0}, {0}, 0, 0, 0};
    PyObject *const attr[T_COUNT] = {names[5], names[6], names[7], names[8], names[9], names[10], names[22]};
    PyObject *hit = NULL, *result = NULL;
    Py_buffer views[3];
    int held = 0;
    int64_t *marked = NULL;
    Py_ssize_t *pos = NULL;
    for (int t = 0; t < T_COUNT; t++) {
        s.obj[t] = PyObject_GetAttr(table, attr[t]);
        if (s.obj[t] == NULL) goto done;
    }
    const Py_ssize_t n = PyList_GET_SIZE(reqs);
    if (!PyDict_Check(s.obj[T_ENTRIES]) || !PyDict_Check(s.obj[T_READ_AS]) || !PyList_Check(s.obj[T_ROW_RID]) ||
        !PyList_Check(s.obj[T_ROW_ENTRY]) || !PyDict_Check(s.obj[T_ROWS_OF_NODE]) || n == 0)
        goto not_implemented;
    PyObject *const bufs[3] = {rows_obj, gens_obj, s.obj[T_ROW_GEN]};
    for (; held < 3; held++)
        if (int64_view(bufs[held], &views[held], held < 2 ? n : -1, held == 2) < 0) goto not_implemented;
    const int64_t *rows = views[0].buf, *gens = views[1].buf;
    s.row_gen = views[2].buf;
    s.slots = views[2].len / 8;
    const Py_ssize_t lists = PyList_GET_SIZE(s.obj[T_ROW_RID]) < PyList_GET_SIZE(s.obj[T_ROW_ENTRY])
                                 ? PyList_GET_SIZE(s.obj[T_ROW_RID]) : PyList_GET_SIZE(s.obj[T_ROW_ENTRY]);
    for (Py_ssize_t i = 0; i < n; i++)  /* (ChainTable._row_room would grow the table first: the Python path does) */
        if (rows[i] < 0 || rows[i] >= s.slots || rows[i] >= lists) goto not_implemented;
    if (PyTuple_GET_SIZE(moved) > 0) {
        hit = hit_rows(s.obj[T_ROWS_OF_NODE], moved);
        if (hit == NULL) goto done;
    }
    const Py_ssize_t most = (hit != NULL ? PySet_GET_SIZE(hit) : 0) + PyList_GET_SIZE(recached);
    marked = malloc(sizeof(int64_t) * (size_t)(most + 1));
    pos = malloc(sizeof(Py_ssize_t) * (size_t)n);
    if (marked == NULL || pos == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t m = 0;
    if (marked_rows(hit, recached, marked, &m) < 0) {
        if (PyErr_Occurred()) goto done;
        goto not_implemented;
    }
    for (Py_ssize_t j = 0; j < m; j++)
        if (marked[j] < 0) goto not_implemented;  /* (pool rows and re-cached rows: never negative) */
    /* the rows to read once the marked ones are marked (ChainTable._mark_unread: -2, never a generation), counted
       before anything is written: more than `wave` of them are left to the Python path */
    qsort(marked, (size_t)m, sizeof(int64_t), int64_order);  /* (sets and logs of thousands of rows: no n x m scan) */
    Py_ssize_t k = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        const int64_t g = sorted_has(marked, m, rows[i]) ? -2 : s.row_gen[rows[i]];
        if (g != gens[i]) pos[k++] = i;
    }
    if (k > wave) goto not_implemented;
    result = publish_read(&s, reqs, rows, gens, n, root, hit, marked, m, cls, pos, k);
    goto done;
not_implemented:
    Py_INCREF(Py_NotImplemented);
    result = Py_NotImplemented;
done:
    if (s.paths_open || s.paths_sets) {  /* (after an error too: the writes made stand, as the Python version's do) */
        PyObject *type, *value, *trace;
        PyErr_Fetch(&type, &value, &trace);
        if (paths_done(&s) < 0 && type == NULL) {
            Py_CLEAR(result);
        } else {
            PyErr_Restore(type, value, trace);
        }
    }
    for (int h = 0; h < held; h++) PyBuffer_Release(&views[h]);
    for (int t = 0; t < T_COUNT; t++) Py_XDECREF(s.obj[t]);
    Py_XDECREF(hit);
    free(marked);
    free(pos);
    return result;
}

/* pat_publish_read past its checks: marks, reads and writes (the k rows to read at positions pos of the batch) */
static PyObject *publish_read(ReadState *s, PyObject *reqs, const int64_t *rows, const int64_t *gens, Py_ssize_t n,
                              PyObject *root, PyObject *hit, const int64_t *marked, Py_ssize_t m, PyObject *cls,
                              Py_ssize_t *pos, Py_ssize_t k) {
    PyObject *const *names = s->names;
    for (Py_ssize_t j = 0; j < m; j++)  /* ChainTable._mark_unread */
        if (marked[j] >= 0 && marked[j] < s->slots) s->row_gen[marked[j]] = -2;
    /* _requests_at: every picked request's req_pool_idx read, then compared with its row; then (rid, last node) */
    PyObject *result = NULL, *memo = NULL, *path = NULL, *read_rows = NULL;
    int64_t *batch_rows = NULL;  /* the batch's rows, sorted (only where split nodes reach rows) */
    PyObject **got = calloc((size_t)(4 * k + 1), sizeof(PyObject *));  /* per read: row, rid, gen, last node */
    PyObject **sigs = calloc((size_t)(k + 1), sizeof(PyObject *));
    char *changed = calloc((size_t)(k + 1), 1);
    if (got == NULL || sigs == NULL || changed == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t j = 0; j < k; j++) {
        got[4 * j] = PyObject_GetAttr(PyList_GET_ITEM(reqs, pos[j]), names[23]);
        if (got[4 * j] == NULL) goto done;
    }
    for (Py_ssize_t j = 0; j < k; j++) {
        PyObject *row = PyLong_FromLongLong(rows[pos[j]]);
        if (row == NULL) goto done;
        const int same = PyObject_RichCompareBool(got[4 * j], row, Py_EQ);
        Py_SETREF(got[4 * j], row);
        if (same < 0) goto done;
        if (!same) {
            result = Py_False;
            Py_INCREF(result);
            goto done;
        }
    }
    for (Py_ssize_t j = 0; j < k; j++) {
        PyObject *req = PyList_GET_ITEM(reqs, pos[j]);
        got[4 * j + 1] = PyObject_GetAttr(req, names[13]);
        if (got[4 * j + 1] == NULL) goto done;
        got[4 * j + 2] = PyLong_FromLongLong(gens[pos[j]]);
        if (got[4 * j + 2] == NULL) goto done;
        got[4 * j + 3] = PyObject_GetAttr(req, names[24]);
        if (got[4 * j + 3] == NULL) goto done;
    }
    if (hit != NULL && PySet_GET_SIZE(hit) > 0) {  /* rows outside this batch: stale, read when they return */
        batch_rows = malloc(sizeof(int64_t) * (size_t)n);
        PyObject *it = batch_rows == NULL ? NULL : PyObject_GetIter(hit), *v;
        if (batch_rows == NULL) PyErr_NoMemory();
        if (it == NULL) goto done;
        memcpy(batch_rows, rows, sizeof(int64_t) * (size_t)n);
        qsort(batch_rows, (size_t)n, sizeof(int64_t), int64_order);
        while ((v = PyIter_Next(it)) != NULL) {
            int bad = 0;
            const int64_t r = as_row(v, &bad);
            const int rc = sorted_has(batch_rows, n, r) ? 0 : pop_entry(s, v, r);
            Py_DECREF(v);
            if (rc < 0) break;
        }
        Py_DECREF(it);
        if (PyErr_Occurred()) goto done;
    }
    /* ChainTable._read_rows, a row at a time (_reread): its signature, the read noted, the entry dropped or marked */
    memo = PyDict_New();
    path = PyList_New(0);
    if (memo == NULL || path == NULL) goto done;
    for (Py_ssize_t j = 0; j < k; j++) {
        PyObject *row = got[4 * j], *rid = got[4 * j + 1], *gen = got[4 * j + 2], *node = got[4 * j + 3];
        const int64_t r = rows[pos[j]];
        PyObject *sig = root == Py_None ? Py_NewRef(Py_None) : signature_of(node, root, memo, path, names);
        if (sig == NULL) goto done;
        sigs[j] = sig;
        PyObject *old = PyDict_GetItemWithError(s->obj[T_ENTRIES], row);
        if (old == NULL && PyErr_Occurred()) goto done;
        Py_XINCREF(old);
        PyObject *read = PyTuple_Pack(3, rid, gen, node);
        int rc = read == NULL ? -1 : PyDict_SetItem(s->obj[T_READ_AS], row, read);
        Py_XDECREF(read);
        s->row_gen[r] = gens[pos[j]];
        if (rc == 0) {
            Py_INCREF(rid);
            rc = PyList_SetItem(s->obj[T_ROW_RID], (Py_ssize_t)r, rid);
        }
        if (rc == 0 && sig == Py_None) rc = pop_entry(s, row, r);
        else if (rc == 0) {
            rc = entry_changed(s, old, rid, gen, sig);
            if (rc > 0) changed[j] = 1;
        }
        Py_XDECREF(old);
        if (rc < 0) goto done;
    }
    /* new_entries and _set_entries, one entry at a time */
    Py_ssize_t count = 0;
    for (Py_ssize_t j = 0; j < k; j++) {
        if (!changed[j]) continue;
        int64_t cached_len = 0;
        PyObject *entry = new_entry(s, cls, got[4 * j + 1], got[4 * j + 2], sigs[j], &cached_len);
        if (entry == NULL) goto done;
        const int rc = set_entry(s, got[4 * j], rows[pos[j]], entry, sigs[j], cached_len);
        Py_DECREF(entry);
        if (rc < 0) goto done;
        count++;
    }
    read_rows = PyList_New(k);
    if (read_rows == NULL) goto done;
    for (Py_ssize_t j = 0; j < k; j++) PyList_SET_ITEM(read_rows, j, Py_NewRef(got[4 * j]));
    result = Py_BuildValue("(nO)", count, read_rows);
done:
    if (got != NULL)
        for (Py_ssize_t j = 0; j < 4 * k; j++) Py_XDECREF(got[j]);
    if (sigs != NULL)
        for (Py_ssize_t j = 0; j < k; j++) Py_XDECREF(sigs[j]);
    free(got);
    free(sigs);
    free(changed);
    free(batch_rows);
    Py_XDECREF(memo);
    Py_XDECREF(path);
    Py_XDECREF(read_rows);
    return result;
}

/* refs[key] += step, the key dropped at 0; the count before in *before; -1 on error */
static int count_key(PyObject *refs, PyObject *key, int step, long long *before) {
    PyObject *have = PyDict_GetItemWithError(refs, key);
    long long c = 0;
    if (have != NULL) {
        c = PyLong_AsLongLong(have);
        if (c == -1 && PyErr_Occurred()) return -1;
    } else if (PyErr_Occurred()) {
        return -1;
    }
    *before = c;
    const long long n = c + step;
    if (n == 0) return PyDict_DelItem(refs, key);
    PyObject *v = PyLong_FromLongLong(n);
    const int rc = v == NULL ? -1 : PyDict_SetItem(refs, key, v);
    Py_XDECREF(v);
    return rc;
}

/* The dispatch gate's node terms a tally keeps (_Tally.shape, blocks, partials): on where its shape is set */
typedef struct {
    int on;
    PatBoundShape shape;
    int64_t blocks, partials;
} TallyBound;

/* dict[(item's node id, item's tokens)] += step (count_key), the count before in *before and the tokens in *tokens */
static int count_item(PyObject *dict, PyObject *item, int step, long long *before, long long *tokens) {
    PyObject *key = PyTuple_Pack(2, PyTuple_GET_ITEM(item, 0), PyTuple_GET_ITEM(item, 2));
    const int rc = key == NULL ? -1 : count_key(dict, key, step, before);
    Py_XDECREF(key);
    if (rc < 0) return -1;
    *tokens = PyLong_AsLongLong(PyTuple_GET_ITEM(item, 2));
    return *tokens == -1 && PyErr_Occurred() ? -1 : 0;
}

/* _Tally._count(entry, step) over the signature sig: firsts (its last node: the one under the root), refs, *total and
   the bound's terms moved, in _count's order; -1 on error */
static int tally_count(PyObject *refs, PyObject *firsts, PyObject *sig, int step, long long *total, TallyBound *b) {
    const Py_ssize_t depth = PyTuple_GET_SIZE(sig);
    long long before, tokens;
    if (depth > 0) {
        if (count_item(firsts, PyTuple_GET_ITEM(sig, depth - 1), step, &before, &tokens) < 0) return -1;
        if (b->on)
            b->partials += pat_first_node_partials(before + step, tokens, &b->shape) -
                           pat_first_node_partials(before, tokens, &b->shape);
    }
    for (Py_ssize_t j = 0; j < depth; j++) {
        if (count_item(refs, PyTuple_GET_ITEM(sig, j), step, &before, &tokens) < 0) return -1;
        if (before + step == (step > 0)) *total += step * tokens; /* 0 -> 1 adds the node's tokens, 1 -> 0 removes */
        if (b->on)
            b->blocks += pat_node_blocks(before + step, tokens, &b->shape) - pat_node_blocks(before, tokens, &b->shape);
    }
    return 0;
}

/* Whether entry (borrowed; NULL or None: none) has a signature of 3-tuples of ints that fit int64, what tally_count
   reads; its signature (a new reference) in *sig, NULL for none; -1 on error, 0 where it is not so shaped */
static int tally_sig(PyObject *entry, PyObject *name, PyObject **sig) {
    *sig = NULL;
    if (entry == NULL || entry == Py_None) return 1;
    PyObject *v = PyObject_GetAttr(entry, name);
    if (v == NULL) return -1;
    int bad = !signature_shaped(v);
    for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(v) && !bad; j++) {
        PyObject *item = PyTuple_GET_ITEM(v, j);
        bad = !PyLong_CheckExact(PyTuple_GET_ITEM(item, 0)) || !PyLong_CheckExact(PyTuple_GET_ITEM(item, 2));
        if (!bad) sig_int(item, 2, &bad);
    }
    if (bad) {
        Py_DECREF(v);
        return 0;
    }
    *sig = v;
    return 1;
}

/* obj.name = v (an int); -1 on error */
static int set_int(PyObject *obj, PyObject *name, int64_t v) {
    PyObject *o = PyLong_FromLongLong(v);
    const int rc = o == NULL ? -1 : PyObject_SetAttr(obj, name, o);
    Py_XDECREF(o);
    return rc;
}

/* The tally's bound terms (names: "shape", "blocks", "partials") into *b: b->on 1 where its shape is a tuple of three
   ints (rows per block >= 1) and its terms ints, 0 where its shape is None, -1 where they are not so shaped; -1 on
   error (an exception set) */
static int tally_bound(PyObject *tally, PyObject *const *names, TallyBound *b) {
    b->on = 0;
    PyObject *shape = PyObject_GetAttr(tally, names[0]);
    if (shape == NULL) return -1;
    if (shape == Py_None) {
        Py_DECREF(shape);
        return 0;
    }
    PyObject *blocks = PyObject_GetAttr(tally, names[1]);
    PyObject *partials = blocks == NULL ? NULL : PyObject_GetAttr(tally, names[2]);
    int rc = partials == NULL ? -1 : 0;
    b->on = -1;
    if (rc == 0 && PyTuple_Check(shape) && PyTuple_GET_SIZE(shape) == 3) {
        PyObject *const items[5] = {PyTuple_GET_ITEM(shape, 0), PyTuple_GET_ITEM(shape, 1), PyTuple_GET_ITEM(shape, 2),
                                    blocks, partials};
        int64_t v[5];
        int bad = 0;
        for (int i = 0; !bad && i < 5; i++) v[i] = as_row(items[i], &bad);
        if (!bad && v[0] >= 1) {
            b->on = 1;
            b->shape.rows_per_block = v[0];
            b->shape.token_bytes = v[1];
            b->shape.partial_bytes = v[2];
            b->blocks = v[3];
            b->partials = v[4];
        }
    }
    Py_DECREF(shape);
    Py_XDECREF(blocks);
    Py_XDECREF(partials);
    return rc;
}

PyObject *pat_tally_changes(PyObject *tally, PyObject *left, PyObject *touched, PyObject *entries) {
    static PyObject *names[9];
    static const char *const text[9] = {"by_row", "refs", "total", "version", "signature", "firsts", "shape", "blocks",
                                        "partials"};
    if (interned(names, text, 9) < 0) return NULL;
    if (!PyList_Check(left) || !PyList_Check(touched) || !PyDict_Check(entries)) Py_RETURN_NOTIMPLEMENTED;
    PyObject *by_row = PyObject_GetAttr(tally, names[0]), *refs = NULL, *firsts = NULL, *total_obj = NULL;
    PyObject *result = NULL;
    PyObject **sigs = NULL;  /* per left row its old entry's signature, then per touched row old and new */
    const Py_ssize_t nl = PyList_GET_SIZE(left), nt = PyList_GET_SIZE(touched);
    if (by_row == NULL || (refs = PyObject_GetAttr(tally, names[1])) == NULL ||
        (firsts = PyObject_GetAttr(tally, names[5])) == NULL || (total_obj = PyObject_GetAttr(tally, names[2])) == NULL)
        goto done;
    long long total = PyLong_AsLongLong(total_obj);
    if ((total == -1 && PyErr_Occurred()) || !PyDict_Check(by_row) || !PyDict_Check(refs) || !PyDict_Check(firsts)) {
        PyErr_Clear();
        result = Py_NewRef(Py_NotImplemented);
        goto done;
    }
    TallyBound bound = {0};
    if (tally_bound(tally, names + 6, &bound) < 0) goto done;
    if (bound.on < 0) {
        result = Py_NewRef(Py_NotImplemented);
        goto done;
    }
    sigs = calloc((size_t)(nl + 2 * nt + 1), sizeof(PyObject *));
    if (sigs == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    /* checked first: NotImplemented changes nothing (the Python version then raises where it cannot unpack) */
    for (Py_ssize_t i = 0; i < nl + nt; i++) {
        PyObject *row = PyList_GET_ITEM(i < nl ? left : touched, i < nl ? i : i - nl);
        PyObject *old = PyDict_GetItemWithError(by_row, row);
        if (old == NULL && PyErr_Occurred()) goto done;
        int ok = tally_sig(old, names[4], &sigs[i < nl ? i : nl + 2 * (i - nl)]);
        if (ok > 0 && i >= nl) {
            PyObject *now = PyDict_GetItemWithError(entries, row);
            if (now == NULL && PyErr_Occurred()) goto done;
            ok = tally_sig(now, names[4], &sigs[nl + 2 * (i - nl) + 1]);
        }
        if (ok < 0) goto done;
        if (ok == 0) {
            result = Py_NewRef(Py_NotImplemented);
            goto done;
        }
    }
    if (add_to(tally, names[3], 1) < 0) goto done;
    for (Py_ssize_t i = 0; i < nl; i++) {  /* the rows that left */
        PyObject *old = dict_pop(by_row, PyList_GET_ITEM(left, i));
        if (old == NULL) goto done;
        Py_DECREF(old);
        if (sigs[i] != NULL && tally_count(refs, firsts, sigs[i], -1, &total, &bound) < 0) goto done;
    }
    for (Py_ssize_t i = 0; i < nt; i++) {  /* the rows that joined or were read again, with their entries now */
        PyObject *row = PyList_GET_ITEM(touched, i);
        PyObject *old = PyDict_GetItemWithError(by_row, row), *now = PyDict_GetItemWithError(entries, row);
        if (PyErr_Occurred()) goto done;
        if (now == NULL) now = Py_None;
        if ((old == NULL ? Py_None : old) != now) {
            /* the old entry is the one by_row held when the signatures were checked above, or (a row touched twice)
               the new one its first touch put there, checked as entries' */
            PyObject *old_sig = old == NULL || old == Py_None ? NULL : PyObject_GetAttr(old, names[4]);
            if (old_sig == NULL && PyErr_Occurred()) goto done;
            const int rc = old_sig == NULL ? 0 : tally_count(refs, firsts, old_sig, -1, &total, &bound);
            Py_XDECREF(old_sig);
            if (rc < 0) goto done;
            if (sigs[nl + 2 * i + 1] != NULL &&
                tally_count(refs, firsts, sigs[nl + 2 * i + 1], 1, &total, &bound) < 0)
                goto done;
        }
        if (PyDict_SetItem(by_row, row, now) < 0) goto done;
    }
    if (bound.on && (set_int(tally, names[7], bound.blocks) < 0 || set_int(tally, names[8], bound.partials) < 0))
        goto done;
    PyObject *t = PyLong_FromLongLong(total);
    if (t == NULL || PyObject_SetAttr(tally, names[2], t) < 0) {
        Py_XDECREF(t);
        goto done;
    }
    result = t;
done:
    if (sigs != NULL)
        for (Py_ssize_t i = 0; i < nl + 2 * nt; i++) Py_XDECREF(sigs[i]);
    free(sigs);
    Py_XDECREF(by_row);
    Py_XDECREF(refs);
    Py_XDECREF(firsts);
    Py_XDECREF(total_obj);
    return result;
}
