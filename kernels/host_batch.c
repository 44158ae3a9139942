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
   beyond it (0 when a row is negative), with nothing written. The numpy version is forest_edit._survivors. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

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
