"""Build of the optional compiled kernels; the package metadata lives in pyproject.toml.

* ``fastreweight._C_cpu`` (csrc/fbr_cpu.cpp): built whenever torch is importable and a C++ compiler
  works;
* ``fastreweight._C_cuda`` (csrc/fbr_cuda.cu): built as well when torch is a CUDA build and nvcc is
  found (``CUDA_HOME``); ``FASTREWEIGHT_CUDA_ARCHS`` (default ``"80;90a"``) picks the targets.

``FASTREWEIGHT_NO_EXT=1`` skips both.  Without torch (e.g. a metadata-only build in an isolated
environment) nothing is built and the package stays pure Python.  Whatever is not built here is built
just in time on first use (``fastreweight/csrc_backend/__init__.py``), or the backend reports itself
unavailable; ``import fastreweight`` never depends on it.  A failing extension build only warns and
leaves the package installable.
"""
import os
import sys

from setuptools import setup

CSRC = "csrc"


def _flag(name):
    return os.environ.get(name, "") not in ("", "0")


def _extensions():
    if _flag("FASTREWEIGHT_NO_EXT"):
        print("fastreweight: FASTREWEIGHT_NO_EXT set, building no extension", file=sys.stderr)
        return [], {}
    try:
        import torch
        from torch.utils import cpp_extension
    except Exception as exc:  # torch absent (isolated build): pure-Python package
        print(f"fastreweight: torch not importable ({exc}); building no extension", file=sys.stderr)
        return [], {}

    here = os.path.dirname(os.path.abspath(__file__))
    csrc = os.path.join(here, CSRC)
    # relative source paths: setuptools rejects absolute ones in some versions
    exts = [
        cpp_extension.CppExtension(
            "fastreweight._C_cpu",
            [os.path.join(CSRC, "fbr_cpu.cpp")],
            include_dirs=[csrc],
            extra_compile_args={"cxx": ["-O3", "-fopenmp"]},
            extra_link_args=["-fopenmp"],
        )
    ]
    if torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None and not _flag("FASTREWEIGHT_NO_CUDA"):
        archs = os.environ.get("FASTREWEIGHT_CUDA_ARCHS", "80;90a").split(";")
        gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs if a]
        exts.append(
            cpp_extension.CUDAExtension(
                "fastreweight._C_cuda",
                [os.path.join(CSRC, "fbr_cuda.cu")],
                include_dirs=[csrc],
                extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3", *gencode]},
            )
        )

    class BuildExt(cpp_extension.BuildExtension):
        """Turns a failed extension build into a warning: the package still installs, and the
        extension is then built just in time on first use, or reported unavailable."""

        def build_extension(self, ext):
            try:
                super().build_extension(ext)
            except Exception as exc:  # noqa: BLE001 - any compiler failure
                print(f"fastreweight: WARNING: building {ext.name} failed ({exc}); continuing without it", file=sys.stderr)

    return exts, {"build_ext": BuildExt.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
