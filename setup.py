"""Build the Cython kernels in ext/ into analogmem.emulator._kernels (the cells),
analogmem.emulator._testing (the kernels' test hooks) and analogmem.storage._codec (the
storage layer's encode/decode loops). ext/am_kernels.pxd declares the C interface of
ext/am_kernels.h for Cython, analogmem/emulator/_kernels.pxd the kernels' parameter object.

OpenMP is used when the compiler supports it (checked by compiling a tiny program);
otherwise the kernels are built single-threaded and ``analogmem.emulator._kernels.OPENMP`` is
False. Set ``ANALOGMEM_NO_OPENMP=1`` to force a build without OpenMP.

On Linux the extensions are linked stripped (``-s``: no symbol table or debug sections, about
a fifth of the size); set ``ANALOGMEM_KEEP_SYMBOLS=1`` to keep them (profiling, gdb).
"""

import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

def _compiler_has_openmp(compiler) -> bool:
    if os.environ.get("ANALOGMEM_NO_OPENMP"):
        return False
    tmp = tempfile.mkdtemp()
    try:
        src = os.path.join(tmp, "omp.c")
        with open(src, "w") as fh:
            fh.write("#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n")
        objs = compiler.compile([src], output_dir=tmp, extra_postargs=["-fopenmp"])
        compiler.link_executable(objs, os.path.join(tmp, "omp"), extra_postargs=["-fopenmp"])
        return True
    except Exception:  # noqa: BLE001 - any failure means "no OpenMP"
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class BuildExt(build_ext):
    def build_extensions(self):
        openmp = sys.platform != "win32" and _compiler_has_openmp(self.compiler)
        strip = sys.platform.startswith("linux") and not os.environ.get("ANALOGMEM_KEEP_SYMBOLS")
        for ext in self.extensions:
            # -ffp-contract=off: no fused multiply-add contraction, so the AVX-512, AVX2 and baseline
            # clones of the kernels (ext/am_kernels.h) and the numpy reference see the same roundings
            ext.extra_compile_args = ["-O3", "-fno-math-errno", "-ffp-contract=off"] + (["-fopenmp"] if openmp else [])
            ext.extra_link_args = (["-fopenmp"] if openmp else []) + (["-s"] if strip else [])
            ext.define_macros.append(("ANALOGMEM_OPENMP", "1" if openmp else "0"))
        print(f"analogmem: building kernels with OpenMP={'yes' if openmp else 'no'}, "
              f"{'stripped' if strip else 'with symbols'}")
        super().build_extensions()


extensions = [
    Extension(
        "analogmem.emulator._kernels",
        ["ext/_kernels.pyx"],
        depends=["ext/am_kernels.h", "ext/am_kernels.pxd", "analogmem/emulator/_kernels.pxd"],
        include_dirs=[np.get_include(), "ext"],
        libraries=["m"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    ),
    Extension(
        "analogmem.emulator._testing",
        ["ext/_testing.pyx"],
        depends=["ext/am_kernels.h", "ext/am_kernels.pxd"],
        include_dirs=[np.get_include(), "ext"],
        libraries=["m"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    ),
    Extension(
        "analogmem.storage._codec",
        ["ext/_codec.pyx"],
        depends=["ext/am_codec.h", "ext/am_kernels.h"],
        include_dirs=[np.get_include(), "ext"],
        libraries=["m"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    ),
]

setup(
    ext_modules=cythonize(
        extensions,
        include_path=["ext", "."],  # ext/am_kernels.pxd; analogmem/emulator/_kernels.pxd
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    ),
    cmdclass={"build_ext": BuildExt},
)
