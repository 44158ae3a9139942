/* A published decode batch's per-request tuples and its change against the last batch, compiled for the host
   (pat_sglang/host_core.py loads it with ctypes.PyDLL: these functions hold the interpreter lock and use the CPython
   API, unlike host_simulate.c and host_rows.c).

   Role in pack-forward-merge: part of *pack*, the scheduler-side publisher (pat_sglang/sglang_patches/chain_table.py,
   ChainTable.publish_rows). A changed decode batch of 256 requests cost ~105 us of publishing before any request was
   read, on the project's 2-core VM: about ten C-level passes over the batch (the rows as a list and a set, the
   entries' and request ids' tuples, the rows that joined and left as set differences, the absent entries), each a few
   microseconds and more when it runs cold between two decode steps. Here they are one pass over the rows and one over
   the last batch's rows.

   pat_pick_batch(rows, row_entry, row_rid, before, mark, stamp): rows is an int64 buffer (the batch's pool rows, in
   batch order, each < len(mark)); row_entry and row_rid are lists indexed by row (every row < their length); before
   is None or a dict whose keys are the rows of the last batch (the tally's rows); mark is a writable int64 buffer of
   one slot per row, none holding stamp or stamp + 1 (the caller moves stamp on by 2 per call). Returns (entries,
   rids, absent, joined, left): the tuples of row_entry[r] and row_rid[r] over rows, how many of those entries are
   None, the rows of the batch that are not keys of before (each once) and the keys of before that are not rows of
   the batch; joined and left are empty lists where before is None. The Python version is chain_table._pick_batch
   (joined and left are sets there, as lists in another order).

   pat_rows_to_read(rows, gens, row_gen, reqs): rows and gens are int64 buffers of len(reqs) (the batch's pool rows
   and their generations, in the order of the list reqs), row_gen an int64 buffer with every row < its length (the
   generation each row was last read for). Returns the (row, rid, generation, last node) of each request whose row was
   last read for another generation, in batch order, the request's rid and last_node attributes; None if one of those
   requests' req_pool_idx is not its row (all of theirs read and compared before any other attribute). The Python
   version is chain_table._requests_at over the rows where row_gen[rows] != gens. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* Row index of a dict key: -1 if it is not an int within [0, n) (such a key is never a row of the batch). */
static int64_t key_row(PyObject *key, int64_t n) {
    if (!PyLong_Check(key)) return -1;
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(key, &overflow);
    if (overflow || v < 0 || v >= n) {
        PyErr_Clear();
        return -1;
    }
    return (int64_t)v;
}

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

PyObject *pat_pick_batch(PyObject *rows_obj, PyObject *row_entry, PyObject *row_rid, PyObject *before,
                         PyObject *mark_obj, int64_t stamp) {
    if (!PyList_Check(row_entry) || !PyList_Check(row_rid) || (before != Py_None && !PyDict_Check(before))) {
        PyErr_SetString(PyExc_TypeError, "pat_pick_batch: row_entry and row_rid must be lists, before None or a dict");
        return NULL;
    }
    Py_buffer rows_buf, mark_buf;
    if (PyObject_GetBuffer(rows_obj, &rows_buf, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return NULL;
    if (PyObject_GetBuffer(mark_obj, &mark_buf, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&rows_buf);
        return NULL;
    }
    PyObject *entries = NULL, *rids = NULL, *joined = NULL, *left = NULL, *result = NULL;
    if (rows_buf.itemsize != 8 || mark_buf.itemsize != 8) {
        PyErr_SetString(PyExc_TypeError, "pat_pick_batch: rows and mark must be int64 buffers");
        goto done;
    }
    const int64_t *rows = (const int64_t *)rows_buf.buf;
    int64_t *mark = (int64_t *)mark_buf.buf;
    const Py_ssize_t n = rows_buf.len / 8;
    const int64_t slots = (int64_t)(mark_buf.len / 8);
    const int64_t was = stamp, now = stamp + 1; /* a key of before; a row of the batch */
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
    if (before == Py_None) goto build;
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(before, &pos, &key, &value)) {
        const int64_t r = key_row(key, slots);
        if (r >= 0) mark[r] = was;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        const int64_t r = rows[i];
        if (mark[r] != was && mark[r] != now && append_row(joined, r) < 0) goto done;
        mark[r] = now;
    }
    pos = 0;
    while (PyDict_Next(before, &pos, &key, &value)) {
        const int64_t r = key_row(key, slots);
        if ((r < 0 || mark[r] != now) && PyList_Append(left, key) < 0) goto done;
    }
build:
    result = Py_BuildValue("(OOnOO)", entries, rids, absent, joined, left);
done:
    Py_XDECREF(entries);
    Py_XDECREF(rids);
    Py_XDECREF(joined);
    Py_XDECREF(left);
    PyBuffer_Release(&mark_buf);
    PyBuffer_Release(&rows_buf);
    return result;
}

/* Buffer of n int64 items (C-contiguous), or -1 with an exception set. */
static int int64_buffer(PyObject *obj, Py_buffer *buf, Py_ssize_t n, const char *what) {
    if (PyObject_GetBuffer(obj, buf, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return -1;
    if (buf->itemsize != 8 || (n >= 0 && buf->len != n * 8)) {
        PyBuffer_Release(buf);
        PyErr_Format(PyExc_TypeError, "pat_rows_to_read: %s must be int64 of the batch's length", what);
        return -1;
    }
    return 0;
}

PyObject *pat_rows_to_read(PyObject *rows_obj, PyObject *gens_obj, PyObject *row_gen_obj, PyObject *reqs) {
    if (!PyList_Check(reqs)) {
        PyErr_SetString(PyExc_TypeError, "pat_rows_to_read: reqs must be a list");
        return NULL;
    }
    const Py_ssize_t n = PyList_GET_SIZE(reqs);
    Py_buffer rows_buf, gens_buf, gen_buf;
    if (int64_buffer(rows_obj, &rows_buf, n, "rows") < 0) return NULL;
    if (int64_buffer(gens_obj, &gens_buf, n, "gens") < 0) {
        PyBuffer_Release(&rows_buf);
        return NULL;
    }
    if (int64_buffer(row_gen_obj, &gen_buf, -1, "row_gen") < 0) {
        PyBuffer_Release(&gens_buf);
        PyBuffer_Release(&rows_buf);
        return NULL;
    }
    const int64_t *rows = (const int64_t *)rows_buf.buf, *gens = (const int64_t *)gens_buf.buf;
    const int64_t *row_gen = (const int64_t *)gen_buf.buf;
    const int64_t slots = (int64_t)(gen_buf.len / 8);
    PyObject *out = PyList_New(0), *result = NULL;
    int mismatch = 0;
    if (out == NULL) goto done;
    /* first pass: the positions to read (appended as ints), each request's pool index checked against its row */
    for (Py_ssize_t i = 0; i < n; i++) {
        const int64_t r = rows[i];
        if (r < 0 || r >= slots) {
            PyErr_SetString(PyExc_IndexError, "pat_rows_to_read: a row outside row_gen");
            goto done;
        }
        if (row_gen[r] == gens[i]) continue;
        PyObject *idx = PyObject_GetAttrString(PyList_GET_ITEM(reqs, i), "req_pool_idx");
        if (idx == NULL) goto done;
        PyObject *row = PyLong_FromLongLong(r);
        const int same = row == NULL ? -1 : PyObject_RichCompareBool(idx, row, Py_EQ);
        Py_DECREF(idx);
        Py_XDECREF(row);
        if (same < 0) goto done;
        mismatch |= !same;
        if (append_row(out, (int64_t)i) < 0) goto done;
    }
    if (mismatch) {
        result = Py_None;
        Py_INCREF(result);
        goto done;
    }
    /* second pass: each position's (row, rid, generation, last node), in place */
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(out); k++) {
        const Py_ssize_t i = PyLong_AsSsize_t(PyList_GET_ITEM(out, k));
        PyObject *req = PyList_GET_ITEM(reqs, i);
        PyObject *rid = PyObject_GetAttrString(req, "rid");
        if (rid == NULL) goto done;
        PyObject *node = PyObject_GetAttrString(req, "last_node");
        if (node == NULL) {
            Py_DECREF(rid);
            goto done;
        }
        PyObject *item = Py_BuildValue("(LOLO)", (long long)rows[i], rid, (long long)gens[i], node);
        Py_DECREF(rid);
        Py_DECREF(node);
        if (item == NULL) goto done;
        PyList_SetItem(out, k, item); /* steals item, drops the position */
    }
    result = out;
    out = NULL;
done:
    Py_XDECREF(out);
    PyBuffer_Release(&gen_buf);
    PyBuffer_Release(&gens_buf);
    PyBuffer_Release(&rows_buf);
    return result;
}
