"""Clips with soft ground truth for measuring mattes: motion blur, thin strands, or antialiasing only.

Each kind scales with the frame size, so the same shot can be rendered at 640x360, 1280x720
or 1920x1080 (and beyond) with the same content. Used by the matting tests and benchmark.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .session import Session, SourceInfo
from .synth import Clip, ClipSpec, ObjectSpec

SOFT_KINDS = ("motion_blur", "strands", "antialias")


def soft_clip_spec(kind: str, width: int = 1280, height: int = 720, num_frames: int = 12,
                   seed: int = 0) -> ClipSpec:
    """A supersampled clip of `kind` (motion_blur | strands | antialias) whose soft alpha is exact."""
    if kind not in SOFT_KINDS:
        raise ValueError(f"unknown soft clip kind {kind!r}; known: {', '.join(SOFT_KINDS)}")
    rng = np.random.default_rng([seed, SOFT_KINDS.index(kind), 11])
    u = min(width, height) / 720.0  # one "unit" pixel at 720p
    n = max(2, num_frames) - 1
    hues = [float(h) for h in rng.uniform(0, 1, 3)]
    pan = tuple(float(v) for v in rng.uniform(-0.6, 0.6, 2) * u)
    shapes = ["ellipse", "rect", "blob"]
    objects: list[ObjectSpec] = []
    shutter = 0.0
    if kind == "motion_blur":
        shutter = 0.5
        for k in range(2):
            size = (rng.uniform(160, 230) * u, rng.uniform(140, 210) * u)
            speed = rng.uniform(18, 30) * u * rng.choice([-1.0, 1.0])  # px per frame: 9-15 px of blur at 720p
            cx0 = width * (0.3 + 0.4 * k) - speed * n / 2
            cy = height * rng.uniform(0.35, 0.65)
            objects.append(ObjectSpec(k + 1, size, [(0, cx0, cy, 1.0), (n, cx0 + speed * n, cy + rng.uniform(-40, 40) * u, 1.1)],
                                      shape=shapes[(seed + k) % 3], texture=str(rng.choice(["noise", "blobs"])),
                                      hue=hues[k], depth=k, spin=float(rng.uniform(-1.5, 1.5))))
    elif kind == "strands":
        shutter = 0.5
        size = (rng.uniform(220, 280) * u, rng.uniform(200, 260) * u)
        speed = rng.uniform(3, 6) * u
        cx0, cy = width * 0.5 - speed * n / 2, height * 0.5
        objects.append(ObjectSpec(1, size, [(0, cx0, cy, 1.0), (n, cx0 + speed * n, cy + 10 * u, 1.05)],
                                  shape="blob", texture="noise", hue=hues[0], strands=28,
                                  strand_width=1.3 * u, strand_length=0.3))
    else:  # antialias: slow, sharp edges; only the pixel grid makes them soft
        for k in range(2):
            size = (rng.uniform(150, 220) * u, rng.uniform(130, 200) * u)
            speed = rng.uniform(0.3, 1.5) * u
            cx0, cy = width * (0.3 + 0.4 * k), height * rng.uniform(0.35, 0.65)
            objects.append(ObjectSpec(k + 1, size, [(0, cx0, cy, 1.0), (n, cx0 + speed * n, cy + speed * n / 2, 1.05)],
                                      shape=shapes[(seed + k + 1) % 3], texture=str(rng.choice(["noise", "stripes"])),
                                      hue=hues[k], depth=k, spin=float(rng.uniform(-0.5, 0.5))))
    return ClipSpec(name=f"soft_{kind}", width=width, height=height, num_frames=num_frames, seed=seed,
                    background=str(rng.choice(["noise", "blobs"])), background_hue=hues[2], pan=pan,
                    objects=objects, supersample=4, shutter=shutter, motion_samples=8)


def soft_session(path: str | Path, clip: Clip) -> tuple[Session, dict[int, dict[int, np.ndarray]]]:
    """A session holding a soft clip's exact coverage as alpha and coverage >= 0.5 as masks.

    Measures what downstream stages (feather, strips, compositor) do with a known soft
    alpha, without a tracker in between. Returns the open session and {frame: alphas}.
    """
    w, h = clip.spec.width, clip.spec.height
    s = Session.create(path, SourceInfo("/v.mp4", "video", w, h, clip.spec.fps, len(clip)))
    alphas = {}
    for f in range(len(clip)):
        a = clip.alphas(f)
        if not s.objects:
            for oid in sorted(a):
                s.add_object(f"o{oid}")
        labels = np.zeros((h, w), np.uint8)
        for oid in sorted(a):
            labels[a[oid] >= 0.5] = oid
        s.write_mask(f, labels)
        s.write_alpha(f, a, labels)
        alphas[f] = a
    return s, alphas
