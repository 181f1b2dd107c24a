/* Switch the cyclic GC off around a write (no finalizer may run while the
 * segment lock is held) and restore it. PyGC_Disable/Enable are Python 3.10
 * and newer; on 3.9 the gc module does the same. */
#ifndef DSHARED_GC_H
#define DSHARED_GC_H

#include <Python.h>

#if PY_VERSION_HEX >= 0x030A0000
static inline int ds_gc_disable(void) { return PyGC_Disable(); }
static inline void ds_gc_enable(void) { PyGC_Enable(); }
#else
static inline int ds_gc_call(const char *name)
{
    int result = 0;
    PyObject *exc_type, *exc_value, *exc_tb, *gc, *r;
    PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
    gc = PyImport_ImportModule("gc");
    if (gc) {
        r = PyObject_CallMethod(gc, name, NULL);
        if (r) {
            result = PyObject_IsTrue(r) == 1;
            Py_DECREF(r);
        }
        Py_DECREF(gc);
    }
    PyErr_Clear();
    PyErr_Restore(exc_type, exc_value, exc_tb);
    return result;
}
static inline int ds_gc_disable(void)
{
    int was = ds_gc_call("isenabled");
    ds_gc_call("disable");
    return was;
}
static inline void ds_gc_enable(void) { ds_gc_call("enable"); }
#endif

#endif
