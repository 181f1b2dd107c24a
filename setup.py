"""Build the Cython extensions of dshared.

DSHARED_DEBUG=1 builds the debug flavour: -O0 -g, the DSHARED_DEBUG checks in
include/dshared.h, Cython's annotated HTML and line tracing.
"""
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("DSHARED_DEBUG", "") not in ("", "0")

# segment bytes are read through several struct views: no strict aliasing
cflags = ["-fno-strict-aliasing", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-unused-function",
          "-Wno-missing-field-initializers"]
macros = []
if DEBUG:
    cflags += ["-O0", "-g3"]
    macros += [("DSHARED_DEBUG", "1"), ("CYTHON_TRACE_NOGIL", "1")]
else:
    cflags += ["-O2"]

extensions = [
    Extension(
        "dshared." + mod,
        ["dshared/%s.pyx" % mod],
        include_dirs=["dshared/include"],
        extra_compile_args=cflags,
        define_macros=macros,
        libraries=["rt", "pthread"],
    )
    for mod in ("_heap", "_codec")
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        annotate=DEBUG,
        # binding=False: methods of the C types are CPython method descriptors,
        # which check the type of `self`; Cython's own function objects do not,
        # so SharedDict.get("x", 1) or Segment.close("x") would read a str as a
        # Segment and crash the process.
        # embedsignature.format="clinic": each method's docstring starts with
        # its Argument Clinic signature, which CPython turns into
        # __text_signature__, so inspect.signature() and help() work on the
        # method descriptors (binding=False) as on builtin methods
        compiler_directives={"linetrace": DEBUG, "embedsignature": True, "embedsignature.format": "clinic",
                             "binding": False},
    ),
)
