"""Sources and compiler flags of the compiled extensions, in one place.

Read by ``setup.py`` (loaded by path: this module imports nothing but the standard library, so an
install needs neither ``fastreweight`` nor ``torch`` to read it), by the just-in-time build of
``csrc_backend/__init__.py`` and by ``csrc/compile_cuda_check.sh``.  Paths are relative to ``csrc/``.

``FASTREWEIGHT_CUDA_ARCHS`` (default ``"80;90a"``) picks the CUDA targets of both builds.
"""
from __future__ import annotations

import os

#: the CPU library ``fastreweight._C_cpu``: one file per op family, the entry points in register.cpp
CPU_SOURCES = (
    "cpu/similarity_pairwise.cpp",
    "cpu/similarity_prototype.cpp",
    "cpu/epilogue.cpp",
    "cpu/register.cpp",
)
#: the CUDA library ``fastreweight._C_cuda``
CUDA_SOURCES = (
    "cuda/similarity_pairwise.cu",
    "cuda/register.cpp",
)
#: include directories (``#include "checks.h"``, ``#include "cpu/kernels.h"``)
INCLUDE_DIRS = (".",)

CPU_CFLAGS = ("-O3", "-fopenmp")
CPU_LDFLAGS = ("-fopenmp",)
CUDA_HOST_CFLAGS = ("-O3",)
CUDA_NVCC_FLAGS = ("-O3",)
DEFAULT_CUDA_ARCHS = "80;90a"


def cuda_archs() -> list[str]:
    """The CUDA targets: ``FASTREWEIGHT_CUDA_ARCHS`` (``;``-separated, e.g. ``"80;90a"``) or the default."""
    return [a for a in os.environ.get("FASTREWEIGHT_CUDA_ARCHS", DEFAULT_CUDA_ARCHS).split(";") if a]


def nvcc_flags() -> list[str]:
    """``CUDA_NVCC_FLAGS`` and one ``-gencode`` per target of ``cuda_archs()``."""
    return [*CUDA_NVCC_FLAGS, *(f"-gencode=arch=compute_{a},code=sm_{a}" for a in cuda_archs())]


if __name__ == "__main__":  # for shell scripts: `python build_config.py cuda-sources`
    import sys

    what = sys.argv[1] if len(sys.argv) > 1 else ""
    table = {"cpu-sources": CPU_SOURCES, "cuda-sources": CUDA_SOURCES, "cuda-archs": cuda_archs()}
    if what not in table:
        sys.exit(f"usage: build_config.py {{{','.join(table)}}}")
    print(" ".join(table[what]))
