/* gunpy._speedups: the Websocket client's masking in C (optional).
 *
 * RFC 6455 section 5.3: every octet i of a client frame's payload is XORed with
 * octet i mod 4 of the frame's masking key.  In pure Python the fastest way we
 * found (four strided bytes.translate, gunpy/protocols/ws.py) costs 1-1.5 ms per
 * MiB, most of a 1 MiB echo; this loop costs ~0.05 ms.  The build is optional
 * (setup.py): without a compiler gunpy falls back to the Python masker, and
 * GUNPY_NO_SPEEDUPS=1 forces the fallback.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Above this many octets the GIL is released while masking: the buffer is
 * exported (a bytearray cannot be resized meanwhile) and other threads (the
 * owner, other connections) can run. */
#define RELEASE_GIL_AT 65536

static void
xor_mask(unsigned char *p, Py_ssize_t n, const unsigned char key[4])
{
    uint32_t k32;
    uint64_t k64;
    Py_ssize_t i = 0;

    memcpy(&k32, key, 4);
    k64 = ((uint64_t)k32 << 32) | k32;
    /* Whole 8-octet words: the key repeats every 4 octets, so a word starting at
     * a multiple of 4 from the payload's start takes the key doubled.  memcpy
     * keeps unaligned access legal; compilers turn it into plain loads. */
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        w ^= k64;
        memcpy(p + i, &w, 8);
    }
    for (; i < n; i++) {
        p[i] ^= key[i & 3];
    }
}

PyDoc_STRVAR(mask_doc,
"mask(buffer, offset, key)\n--\n\n"
"XOR buffer[offset:] in place with the 4-octet key repeated (RFC 6455 5.3).");

static PyObject *
mask(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer buf, key;
    Py_ssize_t offset;

    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "mask() takes exactly 3 arguments (buffer, offset, key)");
        return NULL;
    }
    offset = PyNumber_AsSsize_t(args[1], PyExc_OverflowError);
    if (offset == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &buf, PyBUF_WRITABLE) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(args[2], &key, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    if (key.len != 4) {
        PyErr_SetString(PyExc_ValueError, "the masking key must be 4 octets (RFC 6455 5.3)");
        goto fail;
    }
    if (offset < 0 || offset > buf.len) {
        PyErr_SetString(PyExc_ValueError, "offset outside the buffer");
        goto fail;
    }
    {
        unsigned char k[4];
        unsigned char *p = (unsigned char *)buf.buf + offset;
        Py_ssize_t n = buf.len - offset;

        memcpy(k, key.buf, 4);
        if (n >= RELEASE_GIL_AT) {
            Py_BEGIN_ALLOW_THREADS
            xor_mask(p, n, k);
            Py_END_ALLOW_THREADS
        }
        else {
            xor_mask(p, n, k);
        }
    }
    PyBuffer_Release(&key);
    PyBuffer_Release(&buf);
    Py_RETURN_NONE;

fail:
    PyBuffer_Release(&key);
    PyBuffer_Release(&buf);
    return NULL;
}

static PyMethodDef speedups_methods[] = {
    {"mask", (PyCFunction)(void (*)(void))mask, METH_FASTCALL, mask_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    "gunpy._speedups",
    "Optional C helpers for gunpy's hot paths (Websocket masking).",
    -1,
    speedups_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&speedups_module);
}
