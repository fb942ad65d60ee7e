"""Progress of long jobs: frames done, rate and time left, for the CLI, the worker and Blender."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TextIO


@dataclass
class Progress:
    """One step of a long job; yielded by the engine after each finished frame."""

    stage: str
    done: int
    total: int
    frame: int | None = None
    fps: float = 0.0
    eta_s: float | None = None
    message: str = ""


class RateMeter:
    """Frames per second and time left over a job, smoothed over the recent frames."""

    def __init__(self, total: int, window: int = 20) -> None:
        self.total = total
        self.done = 0
        self._times: list[float] = [time.monotonic()]
        self._window = window

    def tick(self, n: int = 1) -> tuple[float, float | None]:
        """Count `n` more frames done; return (fps, eta seconds or None)."""
        self.done += n
        self._times.append(time.monotonic())
        if len(self._times) > self._window + 1:
            self._times = self._times[-(self._window + 1) :]
        span = self._times[-1] - self._times[0]
        fps = (len(self._times) - 1) / span if span > 0 else 0.0
        left = max(self.total - self.done, 0)
        eta = left / fps if fps > 0 else None
        return fps, eta

    def progress(self, stage: str, frame: int | None = None, message: str = "", n: int = 1) -> Progress:
        """Tick and package the result as a Progress."""
        fps, eta = self.tick(n)
        return Progress(stage, self.done, self.total, frame, fps, eta, message)


def format_eta(seconds: float | None) -> str:
    """`1:02:03` / `2:03`, or `--:--` when unknown."""
    if seconds is None:
        return "--:--"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class ProgressBar:
    """A one-line text progress bar with rate and ETA, redrawn in place on a terminal."""

    def __init__(self, stream: TextIO | None = None, width: int = 28) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last_line_t = 0.0
        self._open = False

    def update(self, p: Progress) -> None:
        """Draw `p`; on a non-terminal print at most one line every 2 s (and the last)."""
        frac = p.done / p.total if p.total else 1.0
        fill = int(frac * self.width)
        bar = "#" * fill + "-" * (self.width - fill)
        line = f"{p.stage:<9} [{bar}] {p.done}/{p.total} {p.fps:5.1f} fps ETA {format_eta(p.eta_s)}"
        if p.message:
            line += f"  {p.message}"
        if self._tty:
            self.stream.write("\r" + line + "\x1b[K")
            self._open = True
        else:
            now = time.monotonic()
            if now - self._last_line_t < 2.0 and p.done < p.total:
                return
            self._last_line_t = now
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End the in-place line."""
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False
