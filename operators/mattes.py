"""Outputs: Mask datablocks, matte image strips, a compositor setup, and object removal.

``tam.mattes_write(targets={'MASK', 'IMAGE_STRIP', 'COMPOSITOR'})`` asks the worker for
what each target needs (``shapes`` for the Mask, ``export`` of the soft alpha for the
image strips and the compositor) and builds the Blender side when the result arrives. ``tam.objects_remove`` inpaints the
objects away in the worker and adds the result as an image strip above the source.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import bpy
import numpy as np
from bpy.props import BoolProperty, EnumProperty, IntProperty, StringProperty

from ..tam_blender_addon.errors import InputError, SessionError
from ..tam_blender_addon.session import Session
from ..tam_blender_addon.spline_raster import points_digest
from . import runtime
from .clip_source import session_clip, show_in_clip_editors
from .session_ops import _JobOperator, _strips, find_strip, follow_strip

TARGET_ITEMS = [
    ("MASK", "Mask", "Animated Mask datablock (editable spline layers per object)"),
    ("IMAGE_STRIP", "Image Strip", "Matte image sequence added as a strip"),
    ("COMPOSITOR", "Compositor", "A scene whose compositor uses the mattes (alpha, hold-out)"),
]
IMAGE_EXTS = (".png", ".exr", ".tif", ".tiff", ".jpg")
# Keyframe.interpolation enum values (foreach_set takes the integer)
_CONSTANT, _LINEAR = 0, 1


# --------------------------------------------------------------------------- Mask datablock


def zero_frame(scene) -> int:
    """Scene frame showing source frame 0 (following the strip if it was moved)."""
    return follow_strip(scene).mapping.source_to_scene(0)


def _fcurve_collection(mask: bpy.types.Mask, fresh: bool = True):
    """The F-curve collection keys of `mask` go into (4.4+ slots, else legacy); a new action when `fresh`."""
    ad = mask.animation_data
    if not fresh and ad is not None and ad.action is not None:  # keep every key there is
        action = ad.action
        if not (hasattr(action, "slots") and hasattr(action, "layers")):
            return action.fcurves
        if ad.action_slot is None:
            ad.action_slot = action.slots[0] if len(action.slots) else action.slots.new(id_type="MASK", name=mask.name)
        layer = action.layers[0] if len(action.layers) else action.layers.new("Layer")
        strip = layer.strips[0] if len(layer.strips) else layer.strips.new(type="KEYFRAME")
        return strip.channelbag(ad.action_slot, ensure=True).fcurves
    mask.animation_data_clear()
    ad = mask.animation_data_create()
    action = bpy.data.actions.new(name=f"{mask.name} shapes")
    if hasattr(action, "slots") and hasattr(action, "layers"):  # layered actions (4.4+)
        slot = action.slots.new(id_type="MASK", name=mask.name)
        ad.action = action
        ad.action_slot = slot
        layer = action.layers[0] if len(action.layers) else action.layers.new("Layer")
        strip = layer.strips[0] if len(layer.strips) else layer.strips.new(type="KEYFRAME")
        return strip.channelbag(slot, ensure=True).fcurves
    ad.action = action
    return action.fcurves


def _add_keys(fcurves, path: str, index: int, frames: np.ndarray, values: np.ndarray, interpolation: int) -> None:
    """One F-curve with a key per frame, written in bulk."""
    fc = fcurves.new(path, index=index)
    n = len(frames)
    fc.keyframe_points.add(n)
    co = np.empty(2 * n, dtype=np.float32)
    co[0::2] = frames
    co[1::2] = values
    fc.keyframe_points.foreach_set("co", co)
    fc.keyframe_points.foreach_set("interpolation", np.full(n, interpolation, dtype=np.int32))
    fc.update()


def layer_path(layer) -> str:
    """The data path of a mask layer, as F-curves name it."""
    return f'layers["{bpy.utils.escape_identifier(layer.name)}"]'


def _intervals(frames) -> list[list[int]]:
    """Sorted frames -> [[first, last], ...] runs of consecutive frames."""
    out: list[list[int]] = []
    for f in sorted(int(f) for f in frames):
        if out and f == out[-1][1] + 1:
            out[-1][1] = f
        else:
            out.append([f, f])
    return out


def _frames_of(intervals) -> list[int]:
    return [f for a, b in intervals for f in range(int(a), int(b) + 1)]


def _key_visibility(fcurves, lpath: str, scene_intervals: list[list[int]]) -> None:
    """Show the layer exactly on `scene_intervals` through CONSTANT keys on hide and hide_render."""
    keys: dict[int, float] = {}
    for a, b in scene_intervals:
        keys.setdefault(a - 1, 1.0)
        keys[a] = 0.0
        keys[b + 1] = 1.0
    frames = np.array(sorted(keys), dtype=np.float32)
    values = np.array([keys[int(f)] for f in frames], dtype=np.float32)
    for prop in ("hide", "hide_render"):
        old = fcurves.find(f"{lpath}.{prop}", index=0)
        if old is not None:
            fcurves.remove(old)
        _add_keys(fcurves, f"{lpath}.{prop}", 0, frames, values, _CONSTANT)


def _add_span_layer(mask, fcurves, name: str, span: dict, zero: int) -> tuple[bpy.types.MaskLayer, dict[str, str]]:
    """A layer holding one span of the shapes document: splines keyed per frame.

    Returns the layer and, per source frame, the digest of the point positions keyed
    there (what `edited_frames` compares with to notice an artist's edit).
    """
    layer = mask.layers.new(name=name)
    layer.use_fill_holes = True  # holes are inner splines
    lpath = layer_path(layer)
    frames = zero + np.arange(span["start"], span["end"] + 1, dtype=np.float32)
    values = []
    for s_index, spline_doc in enumerate(span["splines"]):
        count = int(spline_doc["count"])
        per_frame = np.asarray(spline_doc["points"], dtype=np.float32)  # (frames, 2 * count)
        values.append(per_frame)
        spline = layer.splines.new()
        spline.use_cyclic = True
        spline.use_fill = True
        spline.points.add(count - 1)
        spline.points.foreach_set("co", per_frame[0])
        for point in spline.points:
            point.handle_left_type = point.handle_right_type = "VECTOR"
        weights = np.asarray(spline_doc.get("weights", []), dtype=np.float32)  # feather where the edge is soft
        feathered = weights.size and weights.any()
        if feathered:
            layer.falloff = "ROOT"  # measured in 5.0.1: "ROOT" ramps linearly ("LINEAR" renders (1 - d/F)^2)
            spline.points.foreach_set("weight", weights[0])
        if len(frames) < 2:
            continue
        for i in range(count):
            ppath = f"{lpath}.splines[{s_index}].points[{i}]"
            _add_keys(fcurves, ppath + ".co", 0, frames, per_frame[:, 2 * i], _LINEAR)
            _add_keys(fcurves, ppath + ".co", 1, frames, per_frame[:, 2 * i + 1], _LINEAR)
            if feathered:
                _add_keys(fcurves, ppath + ".weight", 0, frames, weights[:, i], _LINEAR)
    flat = np.concatenate(values, axis=1) if values else np.zeros((len(frames), 0), np.float32)
    digests = {str(span["start"] + t): points_digest(flat[t]) for t in range(len(frames))}
    return layer, digests


def mask_record(mask: bpy.types.Mask | None) -> dict | None:
    """What the add-on last wrote into `mask` (layers, matte and point digests), None if unknown."""
    if mask is None or "tam_record" not in mask:
        return None
    try:
        rec = json.loads(mask["tam_record"])
    except (TypeError, ValueError):
        return None
    return rec if isinstance(rec, dict) and rec.get("version") == 1 else None


def save_record(mask: bpy.types.Mask, rec: dict) -> None:
    """Store the write record on the Mask (saved with the .blend)."""
    mask["tam_record"] = json.dumps(rec, separators=(",", ":"))


def build_mask(doc: dict, name: str, zero: int, frame_range: tuple[int, int] | None = None) -> bpy.types.Mask:
    """Create (or rebuild from scratch) the Mask datablock `name` from a shapes document.

    One layer per object and constant-topology span (named after the object, numbered
    when there are several spans), one cyclic spline per outline or hole, its points
    keyed at scene frames ``zero + source index``; a span's layer is shown only during
    its frames through CONSTANT keys on ``hide`` and ``hide_render``. The Mask keeps a
    record of what was written (see `update_mask`).
    """
    mask = bpy.data.masks.get(name) or bpy.data.masks.new(name)
    while len(mask.layers):
        mask.layers.remove(mask.layers[0])
    fcurves = _fcurve_collection(mask)
    rec: dict = {"version": 1, "zero": zero, "layers": {}, "digests": {}}
    for obj in doc["objects"]:
        spans = obj["spans"]
        for k, span in enumerate(spans):
            lname = obj["name"] if len(spans) == 1 else f"{obj['name']} {k + 1:03d}"
            layer, digests = _add_span_layer(mask, fcurves, lname, span, zero)
            lpath = layer_path(layer)
            rec["layers"][layer.name] = {"obj": int(obj["id"]), "frames": [[span["start"], span["end"]]],
                                         "points": digests}
            start, end = zero + span["start"], zero + span["end"]
            if len(spans) > 1 or frame_range is None or start > frame_range[0] or end < frame_range[1]:
                _key_visibility(fcurves, lpath, [[start, end]])
        rec["digests"][str(obj["id"])] = obj.get("digests", {})
    if frame_range is not None:
        # a mask strip holds frame_end - frame_start frames (the end is exclusive there)
        mask.frame_start, mask.frame_end = frame_range[0], frame_range[1] + 1
    save_record(mask, rec)
    return mask


def _drop_layer(mask: bpy.types.Mask, fcurves, layer) -> None:
    """Remove a Mask layer and the F-curves that animate it (nothing for None)."""
    if layer is None:
        return
    lpath = layer_path(layer)
    for fc in [fc for fc in fcurves if fc.data_path.startswith(lpath + ".")]:
        fcurves.remove(fc)
    mask.layers.remove(layer)


def update_mask(doc: dict, mask: bpy.types.Mask, rec: dict, zero: int,
                frame_range: tuple[int, int] | None = None) -> bpy.types.Mask:
    """Rewrite only the frames whose matte changed since the last write; keep every other key.

    `doc` was made with the record's digests as ``known``: per object, ``changed`` lists
    the source frames to redo and ``spans`` outlines them. Earlier layers stop showing
    on those frames (and go when they show nothing); the new spans get layers of their
    own. Frames not changed keep their layers and keys as they are, artist edits
    included; a keyframe made from an edited shape is recorded as unchanged, so it keeps
    exactly the artist's spline.
    """
    fcurves = _fcurve_collection(mask, fresh=False)
    zero = int(rec.get("zero", zero))
    layers = rec.setdefault("layers", {})
    alive = {int(obj["id"]) for obj in doc["objects"]}
    for lname, info in list(layers.items()):  # objects removed from the session
        if info["obj"] not in alive:
            _drop_layer(mask, fcurves, mask.layers.get(lname))
            del layers[lname]
            rec.get("digests", {}).pop(str(info["obj"]), None)
    for obj in doc["objects"]:
        oid = int(obj["id"])
        changed = set(int(f) for f in obj.get("changed", []))
        for lname, info in list(layers.items()):
            if info["obj"] != oid or not changed:
                continue
            layer = mask.layers.get(lname)
            keep = [f for f in _frames_of(info["frames"]) if f not in changed]
            if layer is None or not keep:
                _drop_layer(mask, fcurves, layer)
                del layers[lname]
                continue
            info["frames"] = _intervals(keep)
            kept = set(keep)
            info["points"] = {f: d for f, d in info.get("points", {}).items() if int(f) in kept}
            _key_visibility(fcurves, layer_path(layer), [[zero + a, zero + b] for a, b in info["frames"]])
        for span in obj["spans"]:
            n = 1
            while f"{obj['name']} {n:03d}" in layers or mask.layers.get(f"{obj['name']} {n:03d}") is not None:
                n += 1
            layer, digests = _add_span_layer(mask, fcurves, f"{obj['name']} {n:03d}", span, zero)
            layers[layer.name] = {"obj": oid, "frames": [[span["start"], span["end"]]], "points": digests}
            _key_visibility(fcurves, layer_path(layer), [[zero + span["start"], zero + span["end"]]])
        digests = rec.setdefault("digests", {}).setdefault(str(oid), {})
        digests.clear()
        digests.update(obj.get("digests", {}))
    if frame_range is not None:
        mask.frame_start, mask.frame_end = frame_range[0], frame_range[1] + 1
    save_record(mask, rec)
    return mask


def read_shapes(path: str | Path) -> dict:
    """The shapes document the worker wrote (format checked)."""
    doc = json.loads(Path(path).read_text("utf-8"))
    if doc.get("format") != "tam-shapes" or int(doc.get("version", 0)) > 1:
        raise SessionError(f"{path} is not a shapes file this add-on can read")
    return doc


# --------------------------------------------------------------------------- image strips


def _free_channel(scene, above: int, start: int, end: int) -> int:
    """The lowest channel above `above` with no strip overlapping [start, end)."""
    channel = above + 1
    while channel < 128:
        clash = any(
            s.channel == channel and s.frame_final_start < end and s.frame_final_end > start
            for s in _strips(scene)
        )
        if not clash:
            return channel
        channel += 1
    return channel


def _numbered_files(folder: Path) -> list[tuple[int, Path]]:
    """(frame index, file) of the numbered images in `folder`, by index."""
    out = []
    for p in folder.iterdir():
        if p.suffix.lower() in IMAGE_EXTS and p.is_file():
            digits = re.findall(r"\d+", p.stem)
            if digits:
                out.append((int(digits[-1]), p))
    return sorted(out)


def add_image_strip(scene, name: str, files: list[tuple[int, Path]], channel_above: int) -> bpy.types.Strip:
    """Add numbered images (source indices) as one strip aligned with the tracked strip."""
    state = scene.tam
    zero = zero_frame(scene)
    first_index = files[0][0]
    start = zero + first_index
    end = start + len(files)
    if scene.sequence_editor is None:  # a movie clip session's scene may have no strips yet
        scene.sequence_editor_create()
    channel = _free_channel(scene, channel_above, start, end)
    strips = _strips(scene)
    strip = strips.new_image(name=name, filepath=str(files[0][1]), channel=channel, frame_start=start)
    for _, p in files[1:]:
        strip.elements.append(p.name)
    visible_start = state.scene_start
    visible_end = state.scene_start + state.length
    if strip.frame_final_start < visible_start:
        strip.frame_offset_start = visible_start - strip.frame_final_start
    if strip.frame_final_end > visible_end:
        strip.frame_offset_end = strip.frame_final_end - visible_end
    return strip


def _matte_groups(out: Path) -> list[tuple[str, list[tuple[int, Path]]]]:
    """Image sequences the export wrote: (label, files) per folder holding numbered images."""
    groups = []
    folders = [out] + sorted(p for p in out.rglob("*") if p.is_dir())
    for folder in folders:
        files = _numbered_files(folder)
        if files:
            label = folder.relative_to(out).as_posix() if folder != out else "matte"
            groups.append((label, files))
    return groups


def load_as_matte(strip, kind: str, scene=None) -> None:
    """Make an output strip read as what it holds: soft alpha values as they are, RGBA as premultiplied.

    An alpha sequence is declared to be in the sequencer's own colour space (`scene`'s), so
    no conversion touches its values: a strip modifier masked by it mixes by exactly the
    alpha (measured in 5.0.1: "Non-Color" is converted into the sRGB sequencer space, 0.5
    masking as 0.76). The RGBA foreground is premultiplied, the ProRes movie straight.
    """
    if kind in ("alpha", "exr", "png"):
        space = scene.sequencer_colorspace_settings.name if scene is not None else "sRGB"
        strip.colorspace_settings.name = space
    elif kind == "rgba":
        strip.alpha_mode = "PREMUL"
    elif kind == "prores":
        strip.alpha_mode = "STRAIGHT"


# --------------------------------------------------------------------------- compositor


def _math(nodes, operation: str, new_api: bool):
    """A float Math node (ShaderNodeMath in the 5.0 compositor, CompositorNodeMath before)."""
    node = nodes.new("ShaderNodeMath" if new_api else "CompositorNodeMath")
    node.operation = operation
    return node


def soft_alpha_node(nodes, links, sequences: dict[int, list[tuple[int, Path]]], zero: int, new_api: bool):
    """Image nodes on each object's soft alpha sequence, joined by maximum; its float output socket.

    `sequences` maps object id -> (source index, file) of consecutive frames; source index i
    shows at scene frame ``zero + i`` (the node's frame offset maps scene frames to file numbers).
    """
    out = None
    for k, (oid, files) in enumerate(sorted(sequences.items())):
        img = bpy.data.images.load(str(files[0][1]), check_existing=False)
        img.name = f"alpha {oid}"
        img.source = "SEQUENCE"
        img.colorspace_settings.name = "Non-Color"  # coverage, not a picture
        node = nodes.new("CompositorNodeImage")
        node.image = img
        node.frame_duration = len(files)
        node.frame_start = zero + files[0][0]
        node.frame_offset = files[0][0] - 1  # scene frame_start shows file number files[0][0]
        node.location = (-900, -450 - 250 * k)
        socket = node.outputs["Image"]  # grey: colour -> float keeps the value
        if out is None:
            out = socket
            continue
        join = _math(nodes, "MAXIMUM", new_api)
        join.location = (-650, -450 - 250 * k)
        links.new(out, join.inputs[0])
        links.new(socket, join.inputs[1])
        out = join.outputs[0]
    return out


def build_compositor(scene, mask: bpy.types.Mask,
                     alphas: dict[int, list[tuple[int, Path]]] | None = None) -> bpy.types.Scene:
    """A scene "<strip> Matte" whose compositor cuts the source out with the soft matte.

    The matte is the session's soft alpha (`alphas`: each object's exported alpha
    sequence, see `soft_alpha_node`) where given, else the Mask. Outputs: the source with
    the matte as alpha, the hold-out (inverted matte as alpha) and the matte itself.
    Blender 5.0 uses a compositing node group with a Group Output; 4.2-4.5 use
    ``scene.node_tree`` with Composite and Viewer nodes.
    """
    state = scene.tam
    comp = bpy.data.scenes.get(f"{state.strip_name} Matte") or bpy.data.scenes.new(f"{state.strip_name} Matte")
    comp.render.resolution_x, comp.render.resolution_y = state.source_width, state.source_height
    comp.render.resolution_percentage = 100
    comp.render.fps, comp.render.fps_base = scene.render.fps, scene.render.fps_base
    comp.frame_start, comp.frame_end = state.scene_start, state.scene_start + state.length - 1
    comp.render.use_sequencer = False
    comp.render.use_compositing = True
    comp.view_settings.view_transform = "Standard"
    comp.render.film_transparent = True
    clip = session_clip(state)  # a clip session: the Movie Clip node shows that clip as the editor set it up
    if clip is None:
        with runtime.read_session(state) as session:
            source_path = session.source.path if session.source.kind == "video" else session.source.files[0]
        clip = bpy.data.movieclips.load(source_path, check_existing=True)
        clip.frame_start = zero_frame(scene)
    matte_tree(comp, clip, mask, alphas, zero_frame(scene))
    return comp


def matte_tree(comp, clip, mask: bpy.types.Mask | None, alphas: dict[int, list[tuple[int, Path]]] | None,
               zero: int) -> None:
    """The node setup of `build_compositor` in the scene `comp`: cut-out, hold-out and matte of `clip`."""
    new_api = bpy.app.version >= (5, 0, 0)
    if new_api:
        name = f"{mask.name if mask is not None else comp.name} Matte"
        tree = bpy.data.node_groups.get(name) or bpy.data.node_groups.new(name, "CompositorNodeTree")
        comp.compositing_node_group = tree
    else:
        comp.use_nodes = True
        tree = comp.node_tree
    tree.nodes.clear()
    nodes, links = tree.nodes, tree.links
    src = nodes.new("CompositorNodeMovieClip")
    src.clip = clip
    src.location = (-600, 0)
    matte = None
    if mask is not None:  # kept for editing even when the soft alpha drives the outputs
        mnode = nodes.new("CompositorNodeMask")
        mnode.mask = mask
        mnode.location = (-600, -300)
        matte = mnode.outputs[0]
    if alphas:
        matte = soft_alpha_node(nodes, links, alphas, zero, new_api)
    if matte is None:
        raise SessionError("the compositor needs a Mask or the soft alpha sequences")
    cut = nodes.new("CompositorNodeSetAlpha")
    cut.location = (-200, 100)
    hold = nodes.new("CompositorNodeSetAlpha")
    hold.location = (-200, -150)
    inv = _math(nodes, "SUBTRACT", new_api)
    inv.inputs[0].default_value = 1.0
    links.new(matte, inv.inputs[1])
    inv.location = (-400, -250)
    links.new(src.outputs["Image"], cut.inputs["Image"])
    links.new(matte, cut.inputs["Alpha"])
    links.new(src.outputs["Image"], hold.inputs["Image"])
    links.new(inv.outputs[0], hold.inputs["Alpha"])
    if new_api:
        for name in ("Image", "Hold-out", "Matte"):
            if name not in [i.name for i in tree.interface.items_tree]:
                tree.interface.new_socket(name=name, in_out="OUTPUT", socket_type="NodeSocketColor")
        out = nodes.new("NodeGroupOutput")
        out.location = (200, 0)
        links.new(cut.outputs[0], out.inputs["Image"])
        links.new(hold.outputs[0], out.inputs["Hold-out"])
        links.new(matte, out.inputs["Matte"])
    else:
        out = nodes.new("CompositorNodeComposite")
        out.location = (200, 0)
        links.new(cut.outputs[0], out.inputs["Image"])
        viewer = nodes.new("CompositorNodeViewer")
        viewer.location = (200, -200)
        links.new(hold.outputs[0], viewer.inputs["Image"])


# --------------------------------------------------------------------------- operators


def _output_dir(state, name: str, fresh: bool = False) -> Path:
    """A folder inside the session for an output, emptied first when `fresh`.

    A removal's finished frames stay for a resumed job; the engine itself drops them
    when the masks or settings they came from changed.
    """
    path = Session.output_dir(bpy.path.abspath(state.session_path), name)
    if fresh and path.is_dir():
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _replace_strip(scene, name: str) -> None:
    """Remove an earlier output strip of that name (writing again replaces it)."""
    old = find_strip(scene, name)
    if old is not None:
        _strips(scene).remove(old)


def _source_strip_channel(scene) -> int:
    strip = None if scene.tam.clip_name else find_strip(scene, scene.tam.strip_name)
    return strip.channel if strip is not None else 1


class TAM_OT_mattes_write(_JobOperator, bpy.types.Operator):
    """Write the tracked mattes as a Mask, a matte image strip and/or a compositor setup"""

    bl_idname = "tam.mattes_write"
    bl_label = "Write Mattes"
    # no UNDO flag: the result lands later, and then one undo step records it
    bl_options = {"REGISTER"}

    targets: EnumProperty(name="Targets", items=TARGET_ITEMS, options={"ENUM_FLAG"}, default={"MASK"})
    rebuild: BoolProperty(name="Rebuild Mask", default=False,
                          description="Write every frame of the Mask anew (drops edits made on its splines); "
                                      "off: only frames whose matte changed get new keys")

    def run(self, context) -> set[str]:
        targets = set(self.targets)
        if not targets:
            raise InputError("choose at least one output: Mask, Image Strip or Compositor")
        state = follow_strip(context.scene)
        rebuild = self.rebuild
        steps = []
        if targets & {"MASK", "COMPOSITOR"}:
            out = _output_dir(state, "shapes") / "shapes.json"
            rec = None if rebuild else mask_record(bpy.data.masks.get(state.mask_name))
            if rec is not None and int(rec.get("zero", 0)) != zero_frame(context.scene):
                rec = None  # the source moved in time since: every key moves, so write all anew
            params = {"out": str(out)} if rec is None else {"out": str(out), "known": rec.get("digests", {})}
            steps.append(runtime.Step("shapes", params, lambda sc, res: _after_shapes(sc, out, rec)))
        frames = list(range(state.source_start, state.source_start + state.length))
        if targets & {"IMAGE_STRIP", "COMPOSITOR"}:  # the soft alpha: strips, and the compositor's matte
            fmt = "exr" if state.matte_exr else "alpha"
            folder = _output_dir(state, f"mattes_{fmt}", fresh=True)
            steps.append(runtime.Step("export", {"format": fmt, "out": str(folder), "frames": frames},
                                      lambda sc, res: _after_export(sc, folder, fmt, targets)))
        if "IMAGE_STRIP" in targets:
            for kind in sorted(k.lower() for k in state.matte_extra):
                extra = _output_dir(state, f"mattes_{kind}", fresh=True)
                steps.append(runtime.Step("export", {"format": kind, "out": str(extra), "frames": frames},
                                          lambda sc, res, d=extra, k=kind: _after_export(sc, d, k, {"IMAGE_STRIP"})))
        runtime.start_job(context.scene, "Writing mattes", steps, summary=lambda parts: "wrote " + ", ".join(parts))
        return self.finish_job(context)


def _after_shapes(scene, out: Path, rec: dict | None) -> str:
    """The shapes arrived: build or update the Mask (and the compositor scene); what was made, in words.

    With `rec` (what the add-on last wrote) only frames whose matte changed get new keys, so the
    artist's edits elsewhere stay.
    """
    st = scene.tam
    doc = read_shapes(out)
    zero = zero_frame(scene)
    rng = (st.scene_start, st.scene_start + st.length - 1)
    old = bpy.data.masks.get(st.mask_name) if rec is not None else None
    if old is not None:
        mask = update_mask(doc, old, rec, zero, rng)
    else:
        mask = build_mask(doc, st.mask_name or f"{st.strip_name} Track", zero, rng)
    st.mask_name = mask.name
    show_in_clip_editors(mask, session_clip(st))
    q = doc.get("quality", {})
    done = [f"mask {mask.name!r}" + (f" (fit IoU >= {q['min_iou']:.3f})" if q.get("min_iou") else "")]
    return ", ".join(done)  # the compositor follows the soft alpha's export (`_after_export`)


# what each kind of output strip is called after: "<strip> matte <object>"
STRIP_WORDS = {"alpha": "matte", "exr": "matte", "png": "matte", "rgba": "foreground", "prores": "prores"}


def _after_export(scene, out: Path, kind: str = "alpha", targets: set[str] | frozenset = frozenset({"IMAGE_STRIP"})) -> str:
    """An export arrived: add it as muted strips above the source and/or build the compositor; what was made."""
    st = scene.tam
    if kind == "prores":
        return _add_movie_strips(scene, out)
    groups = _matte_groups(out)
    if not groups:
        raise SessionError(f"the worker wrote no matte images into {out}")
    done = []
    if "IMAGE_STRIP" in targets:
        for label, files in groups:
            obj = st.object_by_id(int(label)) if label.isdigit() else None
            name = f"{st.strip_name} {STRIP_WORDS.get(kind, 'matte')} {obj.name if obj else label}"
            _replace_strip(scene, name)
            strip = add_image_strip(scene, name, files, _source_strip_channel(scene))
            load_as_matte(strip, kind, scene)
            strip.blend_type = "ALPHA_OVER"
            strip.mute = True  # a matte over the picture would hide it: unmute to look at it
            done.append(f"strip {strip.name!r}")
    if "COMPOSITOR" in targets:
        alphas = {int(label): files for label, files in groups if label.isdigit()}
        comp = build_compositor(scene, bpy.data.masks.get(st.mask_name), alphas)
        done.append(f"compositor scene {comp.name!r} (soft alpha)")
    return ", ".join(done)


def _add_movie_strips(scene, out: Path) -> str:
    """ProRes 4444 movies (one per object, straight alpha) as muted movie strips aligned with the source."""
    st = scene.tam
    movies = sorted(p for p in out.glob("*.mov") if p.stem.isdigit())
    if not movies:
        raise SessionError(f"the worker wrote no ProRes movie into {out}")
    start = zero_frame(scene) + st.source_start  # the export covers the visible source frames
    done = []
    for path in movies:
        obj = st.object_by_id(int(path.stem))
        name = f"{st.strip_name} prores {obj.name if obj else path.stem}"
        _replace_strip(scene, name)
        channel = _free_channel(scene, _source_strip_channel(scene), start, start + st.length)
        strip = _strips(scene).new_movie(name=name, filepath=str(path), channel=channel, frame_start=start)
        load_as_matte(strip, "prores", scene)
        strip.blend_type = "ALPHA_OVER"
        strip.mute = True
        done.append(f"strip {strip.name!r}")
    return ", ".join(done)


class TAM_OT_objects_remove(_JobOperator, bpy.types.Operator):
    """Remove objects from the video by inpainting; the result is added as a strip above the source"""

    bl_idname = "tam.objects_remove"
    bl_label = "Remove Objects"
    bl_options = {"REGISTER"}  # one undo step when the strip has been added

    object_ids: StringProperty(name="Objects", description="Comma-separated object ids (empty = visible objects)")
    dilate: IntProperty(name="Dilate", default=8, min=0, max=64, subtype="PIXEL")
    feather: IntProperty(name="Feather", default=0, min=0, max=64, subtype="PIXEL")

    def invoke(self, context, event) -> set[str]:
        state = context.scene.tam
        if not self.properties.is_property_set("dilate"):
            self.dilate = state.remove_dilate
        if not self.properties.is_property_set("feather"):
            self.feather = state.remove_feather
        return self.execute(context)

    def run(self, context) -> set[str]:
        state = follow_strip(context.scene)
        try:
            ids = [int(t) for t in re.split(r"[,\s]+", self.object_ids.strip()) if t]
        except ValueError:
            raise InputError(f"object ids must be numbers separated by commas, not {self.object_ids!r}") from None
        if not ids:
            ids = [o.obj_id for o in state.objects if o.visible]
        unknown = [i for i in ids if state.object_by_id(i) is None]
        if unknown or not ids:
            raise InputError(f"no such object: {unknown[0]}" if unknown else "no visible objects to remove")
        frames = list(range(state.source_start, state.source_start + state.length))
        names = "_".join(str(i) for i in ids)
        out = _output_dir(state, f"removed_{names}_d{self.dilate}_f{self.feather}")

        def done(scene, result):
            files = [(i, p) for i, p in _numbered_files(out) if i in set(frames)]
            if len(files) != len(frames):
                raise SessionError(f"inpainting left {len(frames) - len(files)} frames missing in {out}")
            label = ", ".join(scene.tam.object_by_id(i).name for i in ids if scene.tam.object_by_id(i))
            name = f"{scene.tam.strip_name} without {label}"
            _replace_strip(scene, name)
            strip = add_image_strip(scene, name, files, _source_strip_channel(scene))
            return f"removed {label}: strip {strip.name!r} ({len(files)} frames)"

        params = {"objects": ids, "out": str(out), "dilate": self.dilate, "feather": self.feather, "frames": frames}
        runtime.start_job(context.scene, "Removing objects", [runtime.Step("inpaint", params, done)])
        return self.finish_job(context)


CLASSES = (TAM_OT_mattes_write, TAM_OT_objects_remove)
