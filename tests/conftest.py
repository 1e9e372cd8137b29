"""Shared test setup.

Without a GPU, Triton kernels run through the Triton interpreter: TRITON_INTERPRET must be set
before triton is first imported, so it is set here, at collection time.

``poisoned_outputs`` (a fixture returning a context manager) proves that an op writes every element of
its outputs: inside it every tensor allocated uninitialised — ``torch.empty`` in Python, ``at::empty``
in the C++ and CUDA ops (the same ATen factory) — is filled with NaN (integers: their largest value),
through PyTorch's own ``torch.utils.deterministic.fill_uninitialized_memory`` switch, which acts under
``torch.use_deterministic_algorithms(True)``.  ``warn_only=True``: an op without a deterministic
implementation warns instead of raising.  The library itself has no test hook.
"""
import contextlib
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


@contextlib.contextmanager
def _poisoned():
    det = torch.utils.deterministic
    old = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
           det.fill_uninitialized_memory)
    torch.use_deterministic_algorithms(True, warn_only=True)
    det.fill_uninitialized_memory = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old[0], warn_only=old[1])
        det.fill_uninitialized_memory = old[2]


@pytest.fixture
def poisoned_outputs():
    return _poisoned


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
