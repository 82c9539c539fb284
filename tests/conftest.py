"""Shared fixtures: where the evaluation data lives, and small known-answer graphs; which tests are slow.

The inner loop is ``python -m pytest -q -m "not slow"``; CI runs everything. A test is slow when it
is marked so, or when it uses a fixture of SLOW_FIXTURES (marked here, at collection).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("WALKCUT_DATA", REPO.parent / "shared" / "data"))


def data_path(*parts: str) -> Path:
    """A path under ../shared/data; skips the test when it is absent (the data is not shipped)."""
    p = DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"evaluation data not found at {p} (set WALKCUT_DATA)")
    return p


def planted_walk(sizes, *, p_in=1.0, p_out=0.02, seed=0):
    """Row-stochastic P with planted blocks of the given sizes, and the true labels."""
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(len(sizes)), sizes)
    n = truth.size
    A = np.where(truth[:, None] == truth[None, :], p_in, p_out) * rng.uniform(0.5, 1.5, (n, n))
    A = (A + A.T) / 2
    return A / A.sum(axis=1, keepdims=True), truth


def same_partition(a, b) -> bool:
    """True when label vectors ``a`` and ``b`` describe the same partition (up to renaming)."""
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    pairs = np.unique(np.stack([a, b]), axis=1)
    return pairs.shape[1] == np.unique(a).size == np.unique(b).size


#: Fixtures that make every test using them slow (seconds to minutes each, once per session or module):
#: tiny Stable Diffusion pipelines and their ONNX exports (torch), a local Ray cluster, the CMake build
#: of the C++ demo.
SLOW_FIXTURES = frozenset({"tiny_sd", "tiny_xl", "exported", "exported_xl", "tiny_fp16_export", "tiny_onnx",
                           "local_ray", "demo"})


@pytest.hookimpl(tryfirst=True)  # before -m "not slow" deselects by marker
def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def planted():
    return planted_walk([40, 30, 20, 38])
