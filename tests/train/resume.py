"""Helpers of the kill-and-resume tests of the trainer and of SFT: stop a run after a given step as a kill would,
and compare two runs' final weights bit for bit."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


class Interrupt(RuntimeError):
    """The simulated kill, raised by an ``interrupt_at`` callback."""


def interrupt_at(step: int) -> Callable[[int, Any], None]:
    """A ``callbacks=[...]`` entry that raises ``Interrupt`` once ``step`` is done (its metrics logged)."""

    def callback(done: int, metrics: Any) -> None:
        if done == step:
            raise Interrupt

    return callback


def final_weights(out: Path) -> dict[str, Any]:
    """The tensors of the run's ``final/`` model (its one safetensors file)."""
    from safetensors.torch import load_file

    (path,) = (Path(out) / "final").glob("*.safetensors")
    return load_file(str(path))


def assert_same_final_weights(a: Path, b: Path) -> None:
    """The two runs' final models have the same tensors, bit for bit (rtol = atol = 0)."""
    import torch

    wa, wb = final_weights(a), final_weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=0, msg=key)
