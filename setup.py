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
# gcc cannot vectorise sqrt. Never -ffast-math or -march=native in what is shipped.
compile_args = ["-O3", "-fno-math-errno"]

extensions = [
    Extension(
        name="ckernel." + os.path.splitext(os.path.basename(path))[0],
        sources=[path],
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args,
    )
    for path in sorted(glob.glob("ckernel/*.pyx"))
]

setup(ext_modules=cythonize(extensions, compiler_directives=DIRECTIVES))
