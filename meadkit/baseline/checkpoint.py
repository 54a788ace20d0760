"""Checkpoints: plain dicts of tensors, numbers and strings written atomically with torch.save and read
with `torch.load(weights_only=True)` — no pickled objects. One file per stage: RUN/<stage>.pt.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from meadkit.atomic import atomic_path


class CheckpointError(RuntimeError):
    """A run folder that lacks a needed stage checkpoint, or one that cannot be read."""


def stage_path(run_dir: Path | str, stage: str) -> Path:
    """Where a stage's checkpoint lives inside a run folder."""
    return Path(run_dir) / f"{stage}.pt"


def save_checkpoint(path: Path | str, state: dict[str, Any]) -> None:
    """Write `state` (tensors, state dicts, numbers, strings) under a temp name, then rename."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path | str, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely (weights_only); a missing or unreadable file raises CheckpointError."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint {path} (train that stage first)")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # torch raises several types for corrupt or unsafe files
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from None


def rng_state(device: torch.device) -> dict[str, Any]:
    """The torch RNG states that training draws from (CPU, and CUDA when used)."""
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restore what `rng_state` saved."""
    torch.set_rng_state(state["cpu"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)
