"""Build the Cython extensions of dshared.

DSHARED_DEBUG=1 or 2 builds the debug flavour: -O0 -g, Cython's annotated HTML
and line tracing, and the debug tier of include/debug.h at that level (1: the
header and counter invariants asserted at every commit; 2: also the full
check() after every write). A broken invariant aborts the process.
"""
import glob
import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CompileError

DEBUG_LEVEL = int(os.environ.get("DSHARED_DEBUG") or 0)
if DEBUG_LEVEL not in (0, 1, 2):
    raise SystemExit("DSHARED_DEBUG must be 0, 1 or 2, not %r" % os.environ["DSHARED_DEBUG"])
DEBUG = DEBUG_LEVEL > 0

# segment bytes are read through several struct views: no strict aliasing
cflags = ["-fno-strict-aliasing", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-unused-function",
          "-Wno-missing-field-initializers"]
macros = []
if DEBUG:
    cflags += ["-O0", "-g3"]
    macros += [("DSHARED_DEBUG", str(DEBUG_LEVEL)), ("CYTHON_TRACE_NOGIL", "1")]
else:
    cflags += ["-O2"]

extensions = [
    Extension(
        "dshared." + mod,
        ["dshared/%s.pyx" % mod],
        include_dirs=["dshared/include"],
        # in the sdist, and a change to them rebuilds
        depends=sorted(glob.glob("dshared/include/*.h") + glob.glob("dshared/heap/*.px[di]")
                       + glob.glob("dshared/codec/*.pxi")) + ["dshared/_heap.pxd"],
        extra_compile_args=cflags,
        define_macros=macros,
        libraries=["rt", "pthread"],
    )
    for mod in ("_heap", "_codec")
]

NO_COMPILER = """dshared is compiled at install time and needs a C compiler and the
Python headers, and the check with the compiler {cc!r} failed:

    {error}

Install them and try again, for example:
    Debian, Ubuntu:  apt-get install build-essential python3-dev
    Fedora, RHEL:    dnf install gcc python3-devel
    Alpine:          apk add build-base python3-dev
or set CC to a working C compiler."""


class BuildExt(build_ext):
    """Checks the C compiler first (a clear message, not the compiler's
    traceback), then runs Cython on the .pyx sources and builds them."""

    def build_extensions(self):
        self._check_compiler()
        from Cython.Build import cythonize
        cythonized = cythonize(
            self.extensions,
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
        )
        # the C sources into the extensions build_ext has prepared
        for ext, c_ext in zip(self.extensions, cythonized):
            assert ext.name == c_ext.name
            ext.sources = c_ext.sources
        super().build_extensions()

    def _check_compiler(self):
        os.makedirs(self.build_temp, exist_ok=True)
        src = os.path.join(self.build_temp, "dshared_cc_check.c")
        with open(src, "w") as f:
            f.write("#include <Python.h>\nint dshared_cc_check(void) { return 0; }\n")
        try:
            self.compiler.compile([src], output_dir=self.build_temp)
        except (CompileError, OSError) as e:
            cc = (getattr(self.compiler, "compiler_so", None) or ["cc"])[0]
            raise CompileError(NO_COMPILER.format(cc=cc, error=e)) from None


setup(ext_modules=extensions, cmdclass={"build_ext": BuildExt})
