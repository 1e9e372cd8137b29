"""The examples a user copies (``examples/``) run, each on a small slice."""
import importlib.util
import pathlib
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"fastreweight_example_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_drop_in_loop(capsys):
    assert _load("drop_in_loop").main(["--epochs", "3"]) == 0
    out = capsys.readouterr().out
    assert "erm: test accuracy" in out and "fbr: test accuracy" in out and "mislabelled" in out


def test_image_dataloader_with_transforms(capsys):
    assert _load("image_dataloader").main(["--epochs", "2", "--limit", "512"]) == 0
    out = capsys.readouterr().out
    assert "512 training rows" in out and "RandomCrop" in out and "FBR: test accuracy" in out


def test_image_dataloader_with_torchvision():
    try:
        from torchvision import transforms  # noqa: F401
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"torchvision cannot be imported with this torch build ({type(e).__name__})")
    augment, which = _load("image_dataloader").random_crop()
    assert which == "torchvision RandomCrop"


def test_resume(capsys):
    assert _load("resume").main(["--epochs", "3", "--stop", "2"]) == 0
    assert "identical to the uninterrupted run: True" in capsys.readouterr().out
