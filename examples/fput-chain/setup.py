"""Build the compiled integrator ``fput_chain._chain``.

The directives and compiler flags are particle-sim's (its ``setup.py``): no bounds or
wraparound checks unless ``CKERNEL_DEBUG=1``, and ``-ffp-contract=off`` so that no fused
multiply-add changes the rounding: the compiled loop then gives bit for bit the numbers of
the plain-numpy reference (``fput_chain/reference.py``), which the tests check.
"""

from __future__ import annotations

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

# Never -ffast-math or -march=native: wheels run on any x86-64, and results must not
# depend on the machine that built them.
compile_args = ["-O3", "-fno-math-errno", "-ffp-contract=off"]

extensions = [
    Extension(
        name="fput_chain._chain",
        sources=["fput_chain/_chain.pyx"],
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args,
    )
]

setup(ext_modules=cythonize(extensions, compiler_directives=DIRECTIVES))
