"""Fixtures shared by the trainer tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def one_thread():
    """Token-by-token decoding of a tiny model is op-overhead bound: one intra-op thread is faster than two (and
    much faster on a busy 2-core machine). Restored after the module; use with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
