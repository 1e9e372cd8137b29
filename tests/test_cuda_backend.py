"""CUDA-only checks of the CUDA C++ backend (csrc/cuda/).

The agreement tests against the float64 reference (odd shapes, every kernel / centering / cosine
option, up to 1000 classes, every shift, half inputs, strided inputs, poisoned outputs) are shared with
the C++ CPU backend: ``test_cpp_backend.py`` runs them for ``backend="cuda"`` too.  Here: half inputs
through the tensor-core (WMMA) path at more shapes and with the gradient kernel, repeatability in
every dtype, the TORCH_CHECK device message, ``torch.library.opcheck`` on CUDA tensors, and what
``backend="auto"`` picks on CUDA.

Everything here is skipped without a CUDA device or when the extension cannot be built or loaded
(the reason is shown).
"""
from __future__ import annotations

import pytest
import torch

import fastreweight as fr
from fastreweight import csrc_backend

from test_cpp_backend import (  # noqa: E402  (shared builders, device moves and tolerances)
    assert_close32, cast, fbr, make, raw_args, sim, to_device,
)

if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)
LOAD_REASON = csrc_backend.load_cuda()
if LOAD_REASON is not None:
    pytest.skip(f"CUDA extension unavailable: {LOAD_REASON}", allow_module_level=True)

DEV = torch.device("cuda")
ops = torch.ops.fastreweight


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("shape", [(97, 300, 48), (1, 17, 5), (1025, 97, 130)])
def test_half_inputs_accumulate_in_float32(dtype, grad, shape):
    B, M, d = shape
    f64, y, u = make(B, M, d=d, C=5, grad=grad)
    fh = cast(f64, dtype)
    a = sim(fh, y, u, 5, "cuda")
    r = sim(fh, y, u, 5, "reference")  # upcasts the same half values to float32
    r64 = sim(cast(fh, torch.float64), y, u, 5, "reference")
    assert a.dtype == torch.float32
    assert_close32(a, r, r64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_deterministic_across_runs(dtype):
    f, y, u = make(300, 1025, d=70, k=9, C=12, grad=True, dtype=dtype)
    a = sim(f, y, u, 12, "cuda", normalize="cosine")
    b = sim(f, y, u, 12, "cuda", normalize="cosine")
    assert torch.equal(a, b)
    assert torch.equal(fbr(f, y, u, 12, "cuda"), fbr(f, y, u, 12, "cuda"))


def test_device_mismatch_message():
    a = raw_args()
    a = {k: ([t.to(DEV) for t in v] if isinstance(v, list) else (v.to(DEV) if torch.is_tensor(v) else v))
         for k, v in a.items()}
    a["clean_y"] = a["clean_y"].cpu()
    with pytest.raises(RuntimeError, match=r"fastreweight::class_similarity: clean_y is on cpu but xs\[0\] is on cuda"):
        ops.class_similarity(a["xs"], a["zs"], a["mus"], a["es"], a["fs"], a["clean_y"], a["class_weight"], a["cosine"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_opcheck_on_cuda(dtype):
    a = raw_args(dtype=torch.float32)
    a = {k: ([t.to(DEV) for t in v] if isinstance(v, list) else (v.to(DEV) if torch.is_tensor(v) else v))
         for k, v in a.items()}
    for key in ("xs", "zs", "es", "fs"):
        a[key] = [t.to(dtype) for t in a[key]]
    args = (a["xs"], a["zs"], a["mus"], a["es"], a["fs"], a["clean_y"], a["class_weight"], True)
    torch.library.opcheck(ops.class_similarity.default, args)
    y = torch.tensor([0, 1, 2, 0, 1, 2], device=DEV)
    torch.library.opcheck(ops.fbr_scores.default, args + (y, "second", 0.5))


def test_auto_plan_on_cuda_runs_a_fast_backend():
    f, y, u = make(64, 200, C=4)
    f = cast(f, torch.float32)
    fd, yd, ud = to_device(f, y, u, DEV)
    fr.class_similarity(fd["x"], yd, fd["clean_x"], ud, num_classes=4)
    assert fr.last_plan().backend in ("triton", "cuda")
