"""Soft mattes in the real bpy 5.0.1 wheel: Mask feather where the edge is soft, soft strips, soft compositor.

The sessions hold the exact soft coverage of a supersampled synthetic clip
(`matte_clips.soft_clip_spec`) as their alpha, so what Blender renders is compared with
the session's soft alpha itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")
cv2 = pytest.importorskip("cv2")

from bpy_render import render_frames  # noqa: E402 - beside the tests (conftest)

from track_anything.operators.mattes import build_mask, load_as_matte, matte_tree, read_shapes  # noqa: E402
from track_anything.tam_blender_addon import matte_shapes  # noqa: E402 - needs cv2
from track_anything.tam_blender_addon.export import export_masks  # noqa: E402
from track_anything.tam_blender_addon.matte_clips import soft_clip_spec, soft_session  # noqa: E402
from track_anything.tam_blender_addon.matte_shapes import write_shapes  # noqa: E402
from track_anything.tam_blender_addon.session import Session  # noqa: E402
from track_anything.tam_blender_addon.synth import make_clip, write_clip  # noqa: E402

pytestmark = [pytest.mark.bpy]
W, H, N = 640, 360, 3
ZERO = 1  # scene frame of source frame 0


def _session(root: Path, kind: str, clip=None) -> tuple[Session, dict[int, dict[int, np.ndarray]]]:
    """A session of the soft clip `kind`: hard masks (coverage >= 0.5) and the exact coverage as alpha."""
    return soft_session(root / kind, clip or make_clip(soft_clip_spec(kind, W, H, N, seed=2)))


@pytest.fixture(autouse=True)
def empty_file():
    bpy.ops.wm.read_homefile(use_empty=True)


def _render_mask(mask, folder: Path) -> dict[int, np.ndarray]:
    """The Mask through a sequencer mask strip (Raw view: the coverage itself), float 0..1 per frame."""
    scene = bpy.data.scenes.new(f"r {mask.name}")
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = W, H, 100
    scene.view_settings.view_transform = "Raw"
    scene.render.dither_intensity = 0.0
    scene.frame_start, scene.frame_end = ZERO, ZERO + N - 1
    scene.sequence_editor_create().strips.new_mask("m", mask, 1, ZERO)
    paths = render_frames(bpy, scene, range(ZERO, ZERO + N), folder, color_mode="BW")
    return {f - ZERO: cv2.imread(str(p), cv2.IMREAD_UNCHANGED).astype(np.float32) / 255.0 for f, p in paths.items()}


def _mask_of(session: Session, oid: int, tmp: Path, name: str):
    """Shapes document and Mask of object `oid`, as ``tam.mattes_write`` makes them."""
    out = tmp / f"{name}.json"
    write_shapes(session, out, objects=[oid])
    doc = read_shapes(out)
    return doc, build_mask(doc, name, ZERO, (ZERO, ZERO + N - 1))


def test_motion_blurred_mask_is_feathered_towards_the_soft_alpha(tmp_path, monkeypatch):
    """Per point feather from the alpha: the rendered Mask is closer (MSE) to the soft alpha than unfeathered."""
    s, alphas = _session(tmp_path, "motion_blur")
    for oid in (1, 2):
        doc, soft_mask = _mask_of(s, oid, tmp_path, f"soft{oid}")
        assert soft_mask.layers[0].falloff == "ROOT"
        weights = np.concatenate([np.ravel(sp["weights"]) for sp in doc["objects"][0]["spans"][0]["splines"]])
        assert np.median(weights * max(W, H)) > 1.5  # 9-15 px of blur at 720p: 2-4 px here
        soft = _render_mask(soft_mask, tmp_path / f"soft{oid}")
        with monkeypatch.context() as m:  # the same shapes with no feather: the traced outline, weight 0
            m.setattr(matte_shapes, "add_feather", lambda *a, **k: None)
            _, hard_mask = _mask_of(s, oid, tmp_path, f"hard{oid}")
        hard = _render_mask(hard_mask, tmp_path / f"hard{oid}")
        mse_soft = np.mean([np.mean((soft[f] - alphas[f][oid]) ** 2) for f in range(N)])
        mse_hard = np.mean([np.mean((hard[f] - alphas[f][oid]) ** 2) for f in range(N)])
        print(f"object {oid}: MSE feathered {mse_soft:.6f}, unfeathered {mse_hard:.6f}")
        assert mse_soft < 0.8 * mse_hard
    s.close()


def test_sharp_edges_get_no_feather(tmp_path):
    """Antialiased edges of slow objects are soft over a pixel only: (almost) no point is feathered."""
    s, _ = _session(tmp_path, "antialias")
    out = tmp_path / "shapes.json"
    write_shapes(s, out)
    doc = read_shapes(out)
    weights = np.concatenate([np.ravel(sp.get("weights", 0.0)) for o in doc["objects"] for span in o["spans"]
                              for sp in span["splines"]])
    print("antialias feather px: max", weights.max() * max(W, H), "mean", weights.mean() * max(W, H))
    assert np.mean(weights * max(W, H)) < 0.05 and np.quantile(weights * max(W, H), 0.99) < 0.5
    s.close()


@pytest.fixture(scope="module")
def soft_exports(tmp_path_factory) -> dict:
    """The motion-blur clip (mp4), its session's soft alpha, and the alpha / exr / rgba exports."""
    root = tmp_path_factory.mktemp("soft_strips")
    clip = make_clip(soft_clip_spec("motion_blur", W, H, N, seed=2))
    video = write_clip(clip, root / "clip", video=True)["video"]
    s, alphas = _session(root, "motion_blur", clip)
    out = {"video": video, "alphas": alphas}
    for fmt in ("alpha", "exr", "rgba"):
        out[fmt] = root / fmt
        list(export_masks(s, fmt, out[fmt], source=clip))
    s.close()
    return out


def _scene(name: str, view: str = "Raw"):
    scene = bpy.data.scenes.new(name)
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = W, H, 100
    scene.view_settings.view_transform = view
    scene.render.dither_intensity = 0.0
    scene.frame_start, scene.frame_end = ZERO, ZERO + N - 1
    scene.render.image_settings.color_depth = "16"
    return scene


def _read(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    return img.astype(np.float32) / (65535.0 if img.dtype == np.uint16 else 255.0)


def _edges(a: np.ndarray) -> np.ndarray:
    return (a > 0.05) & (a < 0.95)


def _image_strip(scene, folder: Path, channel: int):
    files = sorted(folder.iterdir())
    strip = scene.sequence_editor.strips.new_image(name=folder.name, filepath=str(files[0]), channel=channel,
                                                   frame_start=ZERO)
    for p in files[1:]:
        strip.elements.append(p.name)
    return strip


@pytest.mark.parametrize("fmt", ["alpha", "exr"])
def test_soft_matte_strips_load_as_data_and_mask_a_modifier(soft_exports, fmt, tmp_path):
    """The matte strip renders the soft alpha (within 1/255, in (0, 1) at edges) and masks a strip modifier."""
    alphas = soft_exports["alphas"]
    scene = _scene(f"strip {fmt}", "Standard")  # shows the sequencer's (sRGB) values as they are
    se = scene.sequence_editor_create()
    bpy.context.workspace.sequencer_scene = scene  # 5.0.1 headless: modifiers.new needs it
    matte = _image_strip(scene, soft_exports[fmt] / "1", 1)
    load_as_matte(matte, fmt, scene)
    shown = {f - ZERO: _read(p) for f, p in render_frames(bpy, scene, range(ZERO, ZERO + N),
                                                           tmp_path / "m", "BW").items()}
    for f in range(N):
        a, edge = alphas[f][1], _edges(alphas[f][1])
        assert 0.05 < shown[f][edge].mean() < 0.95 and np.all((shown[f][edge] > 0) & (shown[f][edge] < 1))
        assert np.abs(shown[f] - a).max() < 1 / 255, f
    # a grey strip darkened by a Bright/Contrast modifier masked by the matte strip: mixed by the alpha
    # the matte strip stays unmuted below (a muted strip gives the modifier no mask); the grey one covers it
    grey = se.strips.new_effect(name="grey", type="COLOR", channel=2, frame_start=ZERO, length=N)
    grey.color = (0.5, 0.5, 0.5)
    mod = grey.modifiers.new(name="dark", type="BRIGHT_CONTRAST")
    mod.bright = -10.0  # stays above 0: no clipping after the mix
    mod.input_mask_type = "STRIP"
    mod.input_mask_strip = matte
    got = {f - ZERO: _read(p) for f, p in render_frames(bpy, scene, range(ZERO, ZERO + N),
                                                         tmp_path / "g", "BW").items()}
    mod.input_mask_strip = None  # the modifier everywhere
    dark = _read(render_frames(bpy, scene, [ZERO], tmp_path / "d", "BW")[ZERO])
    grey.modifiers.remove(mod)
    base = _read(render_frames(bpy, scene, [ZERO], tmp_path / "b", "BW")[ZERO])  # the grey strip alone
    assert np.abs(base - dark).min() > 0.05
    for f in range(N):
        want = base + alphas[f][1] * (dark - base)
        assert np.abs(got[f] - want).max() < 2 / 255, f


def test_compositor_alpha_is_the_soft_alpha(soft_exports, tmp_path):
    """The compositor setup's cut-out carries the session's soft alpha (within 1/255 on edge pixels)."""
    alphas = soft_exports["alphas"]
    comp = _scene("comp soft")
    comp.render.use_sequencer = False
    comp.render.use_compositing = True
    comp.render.film_transparent = True
    clip = bpy.data.movieclips.load(str(soft_exports["video"]), check_existing=False)
    clip.frame_start = ZERO
    sequences = {int(d.name): [(int(p.stem), p) for p in sorted(d.iterdir())]
                 for d in soft_exports["alpha"].iterdir()}
    matte_tree(comp, clip, None, sequences, ZERO)
    paths = render_frames(bpy, comp, range(ZERO, ZERO + N), tmp_path, "RGBA")
    for f in range(N):
        got = _read(paths[ZERO + f])[..., 3]
        want = np.maximum(alphas[f][1], alphas[f][2])
        edge = _edges(want)
        assert edge.sum() > 100
        err = np.abs(got - want)
        print(f"frame {f}: edge alpha error max {err[edge].max():.5f}, mean {err[edge].mean():.5f}")
        assert err[edge].max() < 1 / 255 and err.max() < 1 / 255, f
