"""Lesson 09's Gaussian blur runs without torchvision (missing, or built for another torch) and then gives
torchvision's answer: the "blurred digits" and "smoothed noise" OOD sets and the blur baseline of the
restoration section do not depend on whether torchvision imports."""

import ast
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

LESSON = Path(__file__).resolve().parents[1] / "09_ebm_applications.py"


def lesson_blur():
    """The lesson's ``blur`` function, compiled from its source (importing the lesson would run it)."""
    tree = ast.parse(LESSON.read_text())
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "blur")
    namespace = {"torch": torch, "F": F}
    exec(compile(ast.Module(body=[node], type_ignores=[]), str(LESSON), "exec"), namespace)
    return namespace["blur"]


@pytest.mark.parametrize("kernel_size, sigma", [(5, 0.5), (5, 1.2), (5, 1.5), (7, 1.5)])
def test_blur_without_torchvision_matches_torchvision(request, kernel_size, sigma):
    gaussian_blur = pytest.importorskip("torchvision.transforms.functional").gaussian_blur
    blur = lesson_blur()
    x = 2 * torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(0)) - 1
    reference = gaussian_blur(x, kernel_size=kernel_size, sigma=sigma)
    request.getfixturevalue("broken_torchvision")  # from here on, torchvision does not import
    fallback = blur(x, kernel_size, sigma)
    assert torch.allclose(fallback, reference, atol=1e-6)
    assert not torch.allclose(fallback, x, atol=1e-2)  # it did blur
