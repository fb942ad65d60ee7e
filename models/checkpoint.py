"""Loading checkpoint files safely and checking they fit the network before use."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ..errors import WeightsError


def load_state_dict_file(path: str | Path, what: str = "checkpoint") -> dict:
    """Read a .pth with ``torch.load(weights_only=True)``; unwrap common containers.

    Raises WeightsError with one line naming the file when it is missing or unreadable.
    """
    import torch

    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"{what} not found: {p}")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a damaged or foreign file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"{what} {p} could not be read as a PyTorch checkpoint: {first}") from exc
    for wrapper in ("state_dict", "model", "netG", "network"):
        if isinstance(obj, Mapping) and wrapper in obj and isinstance(obj[wrapper], Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{what} {p} does not hold a state dict")
    return {k[7:] if k.startswith("module.") else k: v for k, v in obj.items()}


def check_state_dict(expected: Mapping[str, object], got: Mapping[str, object], what: str) -> None:
    """Raise WeightsError in one line if keys or shapes of `got` differ from `expected`."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    wrong = [
        f"{k} {tuple(got[k].shape)} != {tuple(expected[k].shape)}"
        for k in expected
        if k in got and tuple(got[k].shape) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or wrong):
        return

    def few(items: list[str]) -> str:
        return ", ".join(items[:3]) + (f" (+{len(items) - 3} more)" if len(items) > 3 else "")

    parts = []
    if missing:
        parts.append(f"{len(missing)} missing: {few(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected: {few(unexpected)}")
    if wrong:
        parts.append(f"{len(wrong)} wrong shape: {few(wrong)}")
    raise WeightsError(f"{what} does not fit the network: " + "; ".join(parts))
