"""Build of the optional compiled kernels; the package metadata lives in pyproject.toml.

* ``fastreweight._C_cpu`` (``csrc/cpu/``): built whenever torch is importable and a C++ compiler works;
* ``fastreweight._C_cuda`` (``csrc/cuda/``): built as well when torch is a CUDA build and nvcc is found
  (``CUDA_HOME``); ``FASTREWEIGHT_CUDA_ARCHS`` (default ``"80;90a"``) picks the targets.

Sources and flags come from ``fastreweight/csrc_backend/build_config.py`` (shared with the
just-in-time build).  ``FASTREWEIGHT_NO_EXT=1`` skips both.  Without torch (e.g. a metadata-only build
in an isolated environment) nothing is built and the package stays pure Python.  Whatever is not built
here is built just in time on first use (``fastreweight/csrc_backend/__init__.py``), or the backend
reports itself unavailable; ``import fastreweight`` never depends on it.  A failing extension build
(no working compiler included) only warns and leaves the package installable.  For the just-in-time
build of an installed package, the ``csrc/`` sources are copied into the wheel as
``fastreweight/_csrc/`` (``BuildPy``).
"""
import glob
import importlib.util
import os
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

CSRC = "csrc"
#: where the wheel carries the csrc/ sources (read by fastreweight/csrc_backend/__init__.py)
PACKAGED_CSRC = os.path.join("fastreweight", "_csrc")
CSRC_PATTERNS = ("*.h", "*.cpp", "*.cu")


def _flag(name):
    return os.environ.get(name, "") not in ("", "0")


def _build_config(here):
    """fastreweight/csrc_backend/build_config.py, loaded by path (importing the package needs torch)."""
    path = os.path.join(here, "fastreweight", "csrc_backend", "build_config.py")
    spec = importlib.util.spec_from_file_location("fastreweight_build_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildPy(build_py):
    """Also copies the ``csrc/`` sources into the built package (``fastreweight/_csrc/``), so that an
    installed package whose extension was not built at install time (isolated build without torch, no
    compiler) can still build it just in time.  An editable install uses the checkout's ``csrc/``."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        here = os.path.dirname(os.path.abspath(__file__))
        root = os.path.join(here, CSRC)
        for pattern in CSRC_PATTERNS:
            for src in sorted(glob.glob(os.path.join(root, "**", pattern), recursive=True)):
                dst = os.path.join(self.build_lib, PACKAGED_CSRC, os.path.relpath(src, root))
                self.mkpath(os.path.dirname(dst))
                self.copy_file(src, dst)


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
    cfg = _build_config(here)
    # relative source paths: setuptools rejects absolute ones in some versions
    include_dirs = [os.path.join(here, CSRC, d) for d in cfg.INCLUDE_DIRS]
    exts = [
        cpp_extension.CppExtension(
            "fastreweight._C_cpu",
            [os.path.join(CSRC, s) for s in cfg.CPU_SOURCES],
            include_dirs=include_dirs,
            extra_compile_args={"cxx": list(cfg.CPU_CFLAGS)},
            extra_link_args=list(cfg.CPU_LDFLAGS),
            optional=True,
        )
    ]
    if torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None and not _flag("FASTREWEIGHT_NO_CUDA"):
        exts.append(
            cpp_extension.CUDAExtension(
                "fastreweight._C_cuda",
                [os.path.join(CSRC, s) for s in cfg.CUDA_SOURCES],
                include_dirs=include_dirs,
                extra_compile_args={"cxx": list(cfg.CUDA_HOST_CFLAGS), "nvcc": cfg.nvcc_flags()},
                optional=True,
            )
        )

    class BuildExt(cpp_extension.BuildExtension):
        """Turns a failed extension build into a warning: the package still installs, and the
        extension is then built just in time on first use, or reported unavailable."""

        def build_extensions(self):
            # torch checks the compiler (``c++ -v``, its ABI) before building any extension: without a
            # working compiler that raises here, outside build_extension
            try:
                super().build_extensions()
            except Exception as exc:  # noqa: BLE001 - no or broken compiler
                names = ", ".join(ext.name for ext in self.extensions)
                print(f"fastreweight: WARNING: building {names} failed ({type(exc).__name__}: {exc}); "
                      "continuing without it", file=sys.stderr)

        def build_extension(self, ext):
            try:
                super().build_extension(ext)
            except Exception as exc:  # noqa: BLE001 - any compiler failure
                print(f"fastreweight: WARNING: building {ext.name} failed ({exc}); continuing without it", file=sys.stderr)

    return exts, {"build_ext": BuildExt.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass={"build_py": BuildPy, **cmdclass})
