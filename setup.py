"""Build the Cython kernels.

Compiler directives live here, in one place. OpenMP is used when the compiler
supports it and silently left out when it does not, so the build never fails for
want of it. ``CKERNEL_DEBUG=1`` turns on bounds checking for debugging.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup


def _compiler_supports_openmp() -> bool:
    if sys.platform == "win32":
        return False
    compiler = os.environ.get("CC", "cc")
    if shutil.which(compiler.split()[0]) is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "omp.c")
        with open(source, "w") as f:
            f.write("#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n")
        result = subprocess.run(
            [*compiler.split(), "-fopenmp", source, "-o", os.path.join(tmp, "omp")],
            capture_output=True,
        )
        return result.returncode == 0


DEBUG = os.environ.get("CKERNEL_DEBUG") == "1"
OPENMP = os.environ.get("CKERNEL_OPENMP", "auto") != "0" and _compiler_supports_openmp()

DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": False,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "nonecheck": False,
}

# -fno-math-errno only stops libm from setting errno (results are unchanged); without it
# gcc will not vectorise sqrt in the N-body kernel.
compile_args = ["-O3", "-fno-math-errno"] + (["-fopenmp"] if OPENMP else [])
link_args = ["-fopenmp"] if OPENMP else []

extensions = [
    Extension(
        name="ckernel." + os.path.splitext(os.path.basename(path))[0],
        sources=[path],
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )
    for path in sorted(glob.glob("ckernel/*.pyx"))
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=DIRECTIVES,
        compile_time_env={"HAVE_OPENMP": OPENMP},
    )
)
