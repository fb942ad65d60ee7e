"""Raw bytes into a worker's request pipe: the protocol tests' way of sending malformed requests."""

from __future__ import annotations

from track_anything.tam_blender_addon.client import WorkerClient


def send_raw(client: WorkerClient, data: bytes) -> None:
    """Write `data` to the worker's stdin as it is (no framing, no checks)."""
    stdin = client._proc.stdin
    stdin.write(data)
    stdin.flush()
