"""Shared test settings: headless plotting and the repository root on the import path."""

import os
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Run tests with one PyTorch thread, as the lessons do (see --threads): the tensors are small."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def broken_torchvision(monkeypatch):
    """Inside the test, ``import torchvision`` fails the way a torchvision built for another torch does."""
    import builtins

    real_import = builtins.__import__

    def broken(name, *args, **kwargs):
        if name.startswith("torchvision"):
            raise RuntimeError("operator torchvision::nms does not exist")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", broken)
    yield
    monkeypatch.setattr(builtins, "__import__", real_import)
