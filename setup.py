"""Build the Cython kernels.

Compiler directives live here, in one place. ``CKERNEL_DEBUG=1`` turns on bounds and
initialisation checks for debugging. The kernels are single-threaded on purpose (each
worker slot runs one task on one core, and a fixed summation order keeps results
bit-identical), so no OpenMP is needed and none is linked.
"""

from __future__ import annotations

import glob
import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("CKERNEL_DEBUG") == "1"

DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": False,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "nonecheck": False,
}

# -fno-math-errno only stops libm from setting errno (results are unchanged); without it
# gcc cannot vectorise sqrt. -ffp-contract=off forbids fused multiply-adds, so the AVX2 and
# AVX-512 variants of the pair loops (ckernel/_simd.c, chosen at run time) round exactly
# like the portable one. Never -ffast-math or -march=native in what is shipped: wheels run
# on any x86-64 (or any other target, with the portable variant only).
compile_args = ["-O3", "-fno-math-errno", "-ffp-contract=off"]

# C helpers compiled into the extension of the same stem (ckernel/_kernels.pyx).
C_HELPERS = {"_kernels": ["ckernel/_simd.c"]}

extensions = [
    Extension(
        name="ckernel." + os.path.splitext(os.path.basename(path))[0],
        sources=[path, *C_HELPERS.get(os.path.splitext(os.path.basename(path))[0], [])],
        depends=["ckernel/_simd.h"],
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args,
    )
    for path in sorted(glob.glob("ckernel/*.pyx"))
]

setup(ext_modules=cythonize(extensions, compiler_directives=DIRECTIVES))
