"""Packaging: what an install from the sdist / wheel needs (setup.py, pyproject.toml, the C++ sources).

The fast tests run ``setup.py`` commands on a copy of the source tree in a temporary directory (no
compiler run, nothing written into the checkout); the slow one builds an sdist and a wheel from it.
"""
from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _source_copy(dst: pathlib.Path) -> pathlib.Path:
    """The files an sdist holds for a build (setup.py, pyproject.toml, README.md, csrc/, the package)."""
    dst.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md", "MANIFEST.in"):
        shutil.copy(ROOT / name, dst / name)
    shutil.copytree(ROOT / "csrc", dst / "csrc")
    shutil.copytree(ROOT / "fastreweight", dst / "fastreweight",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "_csrc"))
    return dst


def _setup(src: pathlib.Path, *args, env=None, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "setup.py", "-q", *args], cwd=src, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def _build_config():
    import fastreweight.csrc_backend.build_config as cfg

    return cfg


def _check_sources_complete(csrc: pathlib.Path) -> None:
    """Every source of both builds is there, and every quoted #include resolves (include dir: csrc/)."""
    cfg = _build_config()
    missing = [s for s in (*cfg.CPU_SOURCES, *cfg.CUDA_SOURCES) if not (csrc / s).is_file()]
    assert not missing, f"sources missing under {csrc}: {missing}"
    for f in [*csrc.rglob("*.cpp"), *csrc.rglob("*.cu"), *csrc.rglob("*.h")]:
        for inc in re.findall(r'#include\s+"([^"]+)"', f.read_text()):
            assert any((csrc / d / inc).is_file() for d in cfg.INCLUDE_DIRS), f"{f}: #include \"{inc}\" not found"


def test_no_compiler_build_warns_and_succeeds(tmp_path):
    """Without a working compiler the extension build only warns (torch checks ``$CXX --version`` before
    any extension builds: that raised out of build_ext and failed the whole install), also in place
    (an editable install: a library that was not built is not copied into the package)."""
    pytest.importorskip("torch.utils.cpp_extension")
    src = _source_copy(tmp_path / "src")
    r = _setup(src, "build_ext", "--inplace", "--build-temp", str(tmp_path / "tmp"),
               env={"CC": "/bin/false", "CXX": "/bin/false", "FASTREWEIGHT_NO_CUDA": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "WARNING: building fastreweight._C_cpu failed" in r.stderr
    assert not list((src / "fastreweight").glob("_C_cpu*"))


def test_build_py_ships_csrc_sources(tmp_path):
    """The wheel carries the C++ sources as ``fastreweight/_csrc/``: an install whose extension was not
    built at install time (isolated build: torch not importable) can build it just in time.  Before,
    the just-in-time build of every installed package failed with 'sources not found'."""
    src = _source_copy(tmp_path / "src")
    lib = tmp_path / "lib"
    r = _setup(src, "build_py", "--build-lib", str(lib), env={"FASTREWEIGHT_NO_EXT": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    _check_sources_complete(lib / "fastreweight" / "_csrc")
    assert not (src / "fastreweight" / "_csrc").exists()  # nothing written into the source tree


def test_checkout_sources_complete():
    _check_sources_complete(ROOT / "csrc")


def test_csrc_dir_prefers_the_packaged_copy(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    import fastreweight.csrc_backend as cb

    pkg = tmp_path / "site-packages" / "fastreweight"
    (pkg / "csrc_backend").mkdir(parents=True)
    monkeypatch.setattr(cb, "__file__", str(pkg / "csrc_backend" / "__init__.py"))
    assert cb._csrc_dir() == (tmp_path / "site-packages" / "csrc").resolve()  # not installed: the checkout's path
    (pkg / "_csrc").mkdir()
    assert cb._csrc_dir() == (pkg / "_csrc").resolve()
    monkeypatch.undo()
    assert cb.CSRC_DIR == ROOT / "csrc"  # this checkout


def test_triton_is_optional():
    """triton is not a hard dependency (a CPU torch does not need it; a CUDA torch pins its own; an
    unpinned one would overwrite the triton module of ROCm / nightly torch), but the tests get it."""
    deps = PYPROJECT["project"]["dependencies"]
    assert not [d for d in deps if re.match(r"\s*triton\b", d)], deps
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert any(d.startswith("triton") for d in extras["test"])
    assert any(d.startswith("triton") for d in extras["triton"])


def test_license_metadata_is_spdx():
    """``license = {text = ...}`` is deprecated by setuptools (builds unsupported from 2027-02-18)."""
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    req = [r for r in PYPROJECT["build-system"]["requires"] if r.startswith("setuptools")]
    assert req == ["setuptools>=77"], req  # the SPDX string form needs setuptools 77


def test_version_matches_pyproject():
    import fastreweight

    assert fastreweight.__version__ == PYPROJECT["project"]["version"]


def test_import_and_cli_without_optional_dependencies(tmp_path):
    """``import fastreweight``, its subpackages and the CLI parser need neither triton nor cleanlab
    (nor pandas); the triton backend then reports itself unavailable."""
    code = (
        "import sys\n"
        "for m in ('triton', 'cleanlab', 'pandas'): sys.modules[m] = None\n"
        "import torch, fastreweight, fastreweight.training, fastreweight.label_issues, fastreweight.cli\n"
        "from fastreweight import backends\n"
        "r = backends.unavailable_reason('triton', torch.device('cpu'))\n"
        "assert isinstance(r, str) and 'triton' in r, r\n"
        "fastreweight.cli.main(['--help'])\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "usage: fastreweight" in r.stdout


def test_python_m_fastreweight_help(tmp_path):
    r = subprocess.run([sys.executable, "-m", "fastreweight", "score", "--help"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "usage: fastreweight score" in r.stdout
    assert PYPROJECT["project"]["scripts"] == {"fastreweight": "fastreweight.cli:main"}


@pytest.mark.slow
def test_sdist_then_wheel_contents(tmp_path):
    """sdist from the source tree, then a wheel from the sdist (no extension build): the wheel holds the
    sources for the just-in-time build and does not require triton."""
    src = _source_copy(tmp_path / "src")
    dist = tmp_path / "dist"
    r = _setup(src, "sdist", "-d", str(dist), env={"FASTREWEIGHT_NO_EXT": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    (sdist,) = dist.glob("fastreweight-*.tar.gz")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                        str(dist), str(sdist)], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "FASTREWEIGHT_NO_EXT": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    (wheel,) = dist.glob("fastreweight-*.whl")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(tmp_path / "whl")
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        requires = [line for line in z.read(meta).decode().splitlines() if line.startswith("Requires-Dist:")]
    _check_sources_complete(tmp_path / "whl" / "fastreweight" / "_csrc")
    assert (tmp_path / "whl" / "fastreweight" / "csrc_backend" / "build_config.py").is_file()
    assert not [r for r in requires if re.match(r"Requires-Dist: triton\b", r) and "extra ==" not in r], requires
