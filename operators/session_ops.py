"""Session operators: new session on a strip, objects, clicks and boxes, track, cancel.

All of them are scriptable with explicit properties, e.g.::

    bpy.ops.tam.session_new(backend='CLASSIC')
    bpy.ops.tam.object_add(name="car")
    bpy.ops.tam.prompt_add(object_id=1, frame=12, x=320, y=200, positive=True)
    bpy.ops.tam.track(direction='BOTH')

Frames are SCENE frames; x/y are SOURCE pixels, origin top-left, y down. In the UI the
operators return at once and their results arrive through `runtime.pump` (a click shows
"segmenting frame N…" until its mask lands); in background mode they wait for them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty

from ..tam_blender_addon.errors import InputError, TamError
from ..tam_blender_addon.session import Box, Click, FrameMapping
from . import runtime
from .props import BACKEND_ITEMS, BLEND_RELATIVE, SYNCING

DIRECTION_ITEMS = [
    ("BOTH", "Both", "Track forwards and backwards from every keyframe"),
    ("FORWARD", "Forward", "Track forwards from the keyframes"),
    ("BACKWARD", "Backward", "Track backwards from the keyframes"),
]


# --------------------------------------------------------------------------- strips -> sessions


def strip_kind(strip) -> str:
    """'video' or 'images' for a strip a session can track; InputError saying why not otherwise."""
    if strip is None:
        raise InputError("no active strip: select a movie or image strip in the sequencer")
    if strip.type == "MOVIE":
        return "video"
    if strip.type == "IMAGE":
        return "images"
    if strip.type == "SPEED":
        raise InputError(f"strip {strip.name!r} is a speed effect: select the movie or image strip itself")
    raise InputError(f"strip {strip.name!r} is a {strip.type.lower()} strip: only movie and image strips can be tracked")


def _speed_changed(strip, scene) -> str:
    """Why the strip does not show its source frame by frame ('' if it does)."""
    if abs(float(getattr(strip, "speed_factor", 1.0)) - 1.0) > 1e-6:  # 4.x strip playback speed
        return f"it plays at {strip.speed_factor:g}x speed"
    if len(getattr(strip, "retiming_keys", ())) > 0:  # a plain strip has none
        return "it has retiming keys (Reset Retiming clears them)"
    for other in _all_strips(scene):
        if other.type == "SPEED" and getattr(other, "input_1", None) == strip:
            return f"the speed effect {other.name!r} changes its speed"
    return ""


def _all_strips(scene):
    """Every strip of the scene, in meta strips too (5.0: strips_all, 4.2: sequences_all)."""
    se = scene.sequence_editor
    if se is None:
        return []
    return se.strips_all if hasattr(se, "strips_all") else se.sequences_all


def _strips(scene):
    """The top-level strip collection (5.0 `strips`, 4.2 `sequences`)."""
    se = scene.sequence_editor
    return se.strips if hasattr(se, "strips") else se.sequences


def source_index_zero_frame(strip) -> int:
    """Scene frame at which source frame 0 would be shown (trims included)."""
    return int(round(strip.frame_start)) - int(getattr(strip, "animation_offset_start", 0))


def strip_mapping(strip) -> FrameMapping:
    """The frame mapping a movie or image strip shows now: its visible part, trims included."""
    start = int(strip.frame_final_start)
    return FrameMapping(start, start - source_index_zero_frame(strip), int(strip.frame_final_duration))


def strip_source(strip, scene) -> tuple[dict, dict, list[str]]:
    """(SourceInfo fields, FrameMapping fields, warnings) of a movie or image strip.

    Scene frame ``frame_start + i`` shows source frame ``i + animation_offset_start``; the
    visible part starts at ``frame_final_start`` and lasts ``frame_final_duration``.
    """
    kind = strip_kind(strip)
    why = _speed_changed(strip, scene)
    if why:
        raise InputError(f"strip {strip.name!r} cannot be tracked because {why}; remove the speed change first")
    elem = strip.elements[0] if len(strip.elements) else None
    width = int(getattr(elem, "orig_width", 0) or 0)
    height = int(getattr(elem, "orig_height", 0) or 0)
    warnings = []
    scene_fps = scene.render.fps / scene.render.fps_base
    if kind == "video":
        path = bpy.path.abspath(strip.filepath)
        files = None
        fps = float(strip.fps or getattr(elem, "orig_fps", 0.0) or scene_fps)
        num = int(strip.frame_duration + getattr(strip, "animation_offset_start", 0)
                  + getattr(strip, "animation_offset_end", 0))
        if abs(fps - scene_fps) > 0.01:
            warnings.append(
                f"the clip runs at {fps:g} fps but the scene at {scene_fps:g} fps: frames are matched one to one"
            )
    else:
        folder = bpy.path.abspath(strip.directory)
        files = [os.path.join(folder, e.filename) for e in strip.elements]
        path = files[0] if files else folder
        fps = scene_fps
        num = len(files)
    if not os.path.exists(path):
        raise InputError(f"the strip's file is missing: {path}")
    if width <= 0 or height <= 0:
        width, height = _probe_size(path)
    source = {"path": path, "kind": kind, "width": width, "height": height, "fps": fps,
              "num_frames": num, "files": files}
    return source, strip_mapping(strip).to_dict(), warnings


def _probe_size(path: str) -> tuple[int, int]:
    """Pixel size of an image or movie Blender has not measured yet (loads it as a clip)."""
    clip = bpy.data.movieclips.load(path, check_existing=True)
    try:
        w, h = clip.size
    finally:
        if clip.users == 0:
            bpy.data.movieclips.remove(clip)
    if w <= 0 or h <= 0:
        raise InputError(f"cannot read the frame size of {path}")
    return int(w), int(h)


def sessions_root() -> Path:
    """Where new sessions go: a folder next to the saved .blend, else the add-on's user folder."""
    if bpy.data.filepath:
        blend = Path(bpy.data.filepath)
        return blend.parent / f"{blend.stem}_track_anything"
    return runtime.user_dir("sessions")


def new_session_dir(root: Path, strip_name: str) -> Path:
    """A fresh folder under `root` named after the strip."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", strip_name).strip("._") or "strip"
    for n in range(1, 10000):
        path = root / f"{base}_{n:03d}"
        if not path.exists():
            return path
    raise TamError(f"too many sessions in {root}")


def find_strip(scene, name: str):
    """The strip called `name` in the scene (None if gone)."""
    for strip in _all_strips(scene):
        if strip.name == name:
            return strip
    return None


# --------------------------------------------------------------------------- helpers


def follow_strip(scene):
    """``scene.tam`` with its frame mapping updated if the strip was moved or re-trimmed since.

    The strip's current position is what the editor sees, so clicks, keys and new
    strips follow it; the mapping stored in the session folder is only a record.
    """
    state = scene.tam
    if state.clip_name:  # a movie clip session follows its clip instead
        from .clip_source import follow_clip

        follow_clip(state)
        return state
    strip = find_strip(scene, state.strip_name)
    if strip is not None and strip.type in ("MOVIE", "IMAGE"):
        m = strip_mapping(strip)
        if (state.scene_start, state.source_start, state.length) != (m.scene_start, m.source_start, m.length):
            state.scene_start, state.source_start, state.length = m.scene_start, m.source_start, m.length
    return state


def _state(context):
    return follow_strip(context.scene)


def _has_session(cls, context) -> bool:
    """Poll helper: a session exists and no job runs."""
    state = getattr(context.scene, "tam", None)
    if state is None or not state.session_path:
        cls.poll_message_set("No session: select a movie or image strip and click New Session")
        return False
    if runtime.busy():
        cls.poll_message_set("A job is running: wait for it or cancel it")
        return False
    return True


def _idle_session(cls, context) -> bool:
    """Poll helper for jobs: a session, no job, and no segmentation still on its way."""
    if not _has_session(cls, context):
        return False
    if runtime.previews_pending():
        cls.poll_message_set(f"{runtime.preview_text() or 'Segmenting'}: wait a moment")
        return False
    return len(context.scene.tam.objects) > 0


def _object_id(state, value: int) -> int:
    """`value`, or the active object's id when `value` is 0; InputError if none."""
    if value > 0:
        if state.object_by_id(value) is None:
            raise InputError(f"there is no object {value} in this session")
        return value
    active = state.active
    if active is None:
        raise InputError("no object: add one first")
    return active.obj_id


def preview_message(scene, data: dict) -> None:
    """Words for a segmentation that arrived (the mask itself is in the session)."""
    state = scene.tam
    src, areas = int(data.get("frame", 0)), data.get("areas", {})
    for obj in data.get("obj_ids", []):
        item = state.object_by_id(int(obj))
        name = item.name if item else str(obj)
        frame = state.mapping.source_to_scene(src)
        area = int(areas.get(str(obj), 0))
        state.message = (f"{name}: nothing found at frame {frame}; add more clicks or a box" if area == 0
                         else f"{name}: {area} px at frame {frame}")


def prompt_command(p) -> tuple[str, dict]:
    """The worker command that adds prompt `p` (a Click or Box) again."""
    if isinstance(p, Click):
        return "add_click", {"frame": p.frame, "obj": p.obj, "x": p.x, "y": p.y, "positive": p.positive}
    if isinstance(p, Box):
        return "add_box", {"frame": p.frame, "obj": p.obj, "x0": p.x0, "y0": p.y0, "x1": p.x1, "y1": p.y1}
    raise TamError(f"a {type(p).__name__} prompt cannot be added again from Blender")


def send_prompt(context, state, cmd: str, params: dict, label: str) -> None:
    """Send a click or box, note it for undo, and queue the preview of its frame."""
    src, obj = params["frame"], params["obj"]
    edits: list[runtime.Edit] = []

    def refused(_scene, _error) -> None:  # nothing was added: undo must not take another click away
        for edit in edits:
            edit.redo, edit.undo, edit.frames = [], [], []

    runtime.submit(context, state, cmd, params, on_error=refused)
    edits.append(runtime.record_edit(state, label, [(cmd, params)], [("undo_prompt", {"frame": src, "obj": obj})],
                                     [(src, obj)]))
    state.message = f"segmenting frame {state.mapping.source_to_scene(src)}…"
    runtime.request_preview(context, state, src, obj, preview_message)


def clear_prompts(context, state, src: int, obj: int | None, label: str) -> int:
    """Remove the prompts of `obj` (None = all) on `src`, undoably; how many there were."""
    with runtime.read_session(state) as session:
        gone = session.prompts(frame=src, obj=obj)
    params = {"frame": src, "obj": obj}
    try:
        undo = [prompt_command(p) for p in gone]
    except TamError:  # a kind of prompt Blender cannot send again: the clearing stays (no undo)
        undo = []
    runtime.submit(context, state, "clear_prompts", params)
    runtime.record_edit(state, label, [("clear_prompts", params)], undo, sorted({(p.frame, p.obj) for p in gone}))
    return len(gone)


def sync_objects(state, objects) -> None:
    """Mirror the session's object table into ``scene.tam.objects``.

    Objects already listed keep the colour and visibility chosen in the panel; new ones
    take the session's colour. Names are the session's (renames reach it through the worker).
    """
    kept = {item.obj_id: (tuple(item.color), item.visible) for item in state.objects}
    SYNCING[0] = True
    try:
        state.objects.clear()
        for o in objects:
            item = state.objects.add()
            color, visible = kept.get(o.id, (tuple(o.color), True))
            item.obj_id, item.name, item.session_name, item.color, item.visible = o.id, o.name, o.name, color, visible
    finally:
        SYNCING[0] = False
    state.active_object = min(max(state.active_object, 0), max(len(state.objects) - 1, 0))


def _resync(scene, _data=None) -> None:
    """The worker changed the object table: list it again."""
    sync_objects(scene.tam, runtime.session_objects(scene.tam))


def rename_object(scene, item) -> None:
    """The editor renamed `item` in the list: rename it in the session too (undoably)."""
    state = scene.tam
    old, new = item.session_name, item.name
    if not state.session_path or not new or new == old:
        return
    obj = item.obj_id
    try:
        runtime.submit(None, state, "update_object", {"obj": obj, "name": new}, _resync)
    except TamError as exc:
        state.message = f"the session keeps the name {old!r}: {exc}"
        return
    item.session_name = new
    runtime.record_edit(state, f"rename {old}", [("update_object", {"obj": obj, "name": new})],
                        [("update_object", {"obj": obj, "name": old})])


def prompt_kind(prompts) -> str:
    """'box', 'clicks', 'mask' ... : what kind of keyframe a frame's prompts of one object make."""
    kinds = {type(p).__name__.lower() for p in prompts}
    if "box" in kinds:
        return "box" if kinds == {"box"} else "box + clicks"
    if kinds == {"click"}:
        return "clicks"
    return ", ".join(sorted(k.removesuffix("prompt") for k in kinds))


def keyframe_rows(session, obj: int) -> list[tuple[int, str, int]]:
    """(source frame, kind, prompt count) of the frames where object `obj` has prompts."""
    by_frame: dict[int, list] = {}
    for p in session.prompts(obj=obj):
        by_frame.setdefault(p.frame, []).append(p)
    return [(f, prompt_kind(ps), len(ps)) for f, ps in sorted(by_frame.items())]


@bpy.app.handlers.persistent
def on_load(*_args) -> None:
    """A .blend was loaded: stop a job meant for the previous file, then resync the objects."""
    runtime.file_loaded()
    resync_objects()


@bpy.app.handlers.persistent
def on_undo(*_args) -> None:
    """After undo/redo: take the session edits back (or again) as well, then list its objects."""
    runtime.follow_undo()
    resync_objects()


@bpy.app.handlers.persistent
def resync_objects(*_args) -> None:
    """After undo, redo or loading a file: list exactly the objects the session folder holds.

    Undo rewinds ``scene.tam`` but not the session on disk, which stays the truth.
    """
    for scene in bpy.data.scenes:
        state = getattr(scene, "tam", None)
        if state is None or not state.session_path or not os.path.isdir(bpy.path.abspath(state.session_path)):
            continue
        try:
            with runtime.read_session(state) as session:
                objects = session.objects
        except TamError as exc:
            print(f"Track Anything: {exc}")
            continue
        listed = [(item.obj_id, item.session_name) for item in state.objects]
        if [(o.id, o.name) for o in objects] != listed:
            sync_objects(state, objects)


HANDLERS = (("undo_post", on_undo), ("redo_post", on_undo), ("load_post", on_load))


def add_handlers() -> None:
    """Keep the object list in step with the session after undo/redo/load."""
    for name, fn in HANDLERS:
        handlers = getattr(bpy.app.handlers, name)
        if fn not in handlers:
            handlers.append(fn)


def remove_handlers() -> None:
    """Undo `add_handlers`."""
    for name, fn in HANDLERS:
        handlers = getattr(bpy.app.handlers, name)
        while fn in handlers:
            handlers.remove(fn)


class _TamOperator:
    """report() for TamErrors, so scripts get an exception and editors a one-line message."""

    def run(self, context) -> set[str]:
        raise NotImplementedError

    def execute(self, context) -> set[str]:
        try:
            return self.run(context)
        except TamError as exc:
            self.report({"ERROR"}, str(exc))
            context.scene.tam.message = str(exc)
            return {"CANCELLED"}

    def finish_job(self, context) -> set[str]:
        """After `start_job`: in background mode the job is over, report how it ended."""
        if runtime.blocking() and runtime.RT.last_error:
            self.report({"ERROR"}, runtime.RT.last_error)
            return {"CANCELLED"}
        self.report({"INFO"}, context.scene.tam.message)
        return {"FINISHED"}


class _SessionOperator(_TamOperator):
    """An operator on the scene's session: available while one exists and no job runs."""

    @classmethod
    def poll(cls, context) -> bool:
        return _has_session(cls, context)


class _JobOperator(_TamOperator):
    """An operator that starts a job: a session with objects, no job, no segmentation on its way."""

    @classmethod
    def poll(cls, context) -> bool:
        return _idle_session(cls, context)


# --------------------------------------------------------------------------- operators


class TAM_OT_session_new(_TamOperator, bpy.types.Operator):
    """Start a tracking session on the active movie or image strip"""

    bl_idname = "tam.session_new"
    bl_label = "New Session"
    bl_options = {"REGISTER", "UNDO"}

    backend: EnumProperty(name="Backend", items=BACKEND_ITEMS, default="NEURAL")
    strip: StringProperty(name="Strip", description="Strip name (default: the active strip)")
    clip: StringProperty(name="Movie Clip", description="Movie clip name (default: the Clip Editor's clip there, "
                                                        "else the active strip)")
    directory: StringProperty(name="Folder", subtype="DIR_PATH", options=BLEND_RELATIVE,
                              description="Session folder (default: next to the .blend, or the user folder)")

    @classmethod
    def poll(cls, context) -> bool:
        from .clip_source import context_clip

        if context.scene.sequence_editor is None and context_clip(context) is None and not len(bpy.data.movieclips):
            cls.poll_message_set("The scene has no strips and the file no movie clips")
            return False
        if runtime.busy():
            cls.poll_message_set("A job is running: wait for it or cancel it")
            return False
        return True

    def run(self, context) -> set[str]:
        from ..tam_blender_addon.session import Session, SourceInfo
        from .clip_source import clip_source, context_clip

        scene = context.scene
        clip = bpy.data.movieclips.get(self.clip) if self.clip else None if self.strip else context_clip(context)
        if self.clip and clip is None:
            raise InputError(f"no movie clip called {self.clip!r}")
        if clip is not None:
            strip = clip  # the session's source: its name titles the outputs
            source, mapping, warnings = clip_source(clip, scene)
        else:
            se = scene.sequence_editor
            strip = find_strip(scene, self.strip) if self.strip else se.active_strip if se else None
            if self.strip and strip is None:
                raise InputError(f"no strip called {self.strip!r}")
            source, mapping, warnings = strip_source(strip, scene)
        backend = self.backend if self.properties.is_property_set("backend") else runtime.settings(context).backend
        path = Path(bpy.path.abspath(self.directory)) if self.directory else new_session_dir(sessions_root(), strip.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        runtime.release_session()
        prefs = runtime.settings(context)
        with Session.create(path, SourceInfo(**source), FrameMapping.from_dict(mapping),
                            backend=backend.lower()) as session:
            # the tracker settings belong to the session from here on (the panel shows them)
            session.settings.update(max_resolution=prefs.max_resolution, mem_every=prefs.mem_every,
                                    max_memory_frames=prefs.max_memory_frames, half_precision=prefs.half_precision,
                                    sam2_model=prefs.sam2_model)
            session.save()
        state = scene.tam
        # relative to the .blend when beside it, so the project folder can move as a whole
        state.session_path = bpy.path.relpath(str(path)) if bpy.data.filepath else str(path)
        state.strip_name = strip.name
        state.clip_name = clip.name if clip is not None else ""
        state.backend = backend
        state.source_width, state.source_height = source["width"], source["height"]
        state.source_frames = source["num_frames"]
        state.scene_start, state.source_start, state.length = (
            mapping["scene_start"], mapping["source_start"], mapping["length"])
        state.objects.clear()
        state.doubtful.clear()
        state.mask_name = ""
        state.message = f"session for {strip.name}: {source['width']}x{source['height']}, {mapping['length']} frames"
        for w in warnings:
            self.report({"WARNING"}, w)
        try:  # start the worker now (without waiting for it), so the first click answers quickly
            client = runtime.open_session(context, state)
            if not bpy.app.background:
                frame = max(scene.frame_current, state.scene_start)
                runtime.track_future(client.request("embed", frame=state.mapping.scene_to_source(frame)))
        except TamError as exc:
            self.report({"WARNING"}, f"the worker is not ready: {exc}")
        self.report({"INFO"}, state.message)
        return {"FINISHED"}


class TAM_OT_object_add(_SessionOperator, bpy.types.Operator):
    """Add an object to track (then click on it)"""

    bl_idname = "tam.object_add"
    bl_label = "Add Object"
    bl_options = {"REGISTER", "UNDO"}

    name: StringProperty(name="Name", description="Object name (default: 'object N')")

    def run(self, context) -> set[str]:
        state = _state(context)
        edit = runtime.record_edit(state, "add object", [], [])

        def added(scene, info) -> None:
            st = scene.tam
            sync_objects(st, runtime.session_objects(st))
            st.active_object = next(i for i, it in enumerate(st.objects) if it.obj_id == info["id"])
            st.message = f"added {info['name']} (id {info['id']}): click on it in the preview"
            edit.redo = [("add_object", {"name": info["name"], "color": info["color"], "obj_id": info["id"]})]
            edit.undo = [("remove_object", {"obj": info["id"]})]

        state.message = "adding an object…"
        runtime.submit(context, state, "add_object", {"name": self.name or None}, added)
        self.report({"INFO"}, state.message)
        return {"FINISHED"}


class TAM_OT_object_remove(_SessionOperator, bpy.types.Operator):
    """Remove an object, its clicks and its masks from the session (cannot be undone)"""

    bl_idname = "tam.object_remove"
    bl_label = "Remove Object"
    bl_options = {"REGISTER"}  # its masks are gone for good: no undo step that could not bring them back

    object_id: IntProperty(name="Object", default=0, min=0, max=255, description="Object id (0 = active)")

    @classmethod
    def poll(cls, context) -> bool:
        return super().poll(context) and len(context.scene.tam.objects) > 0

    def run(self, context) -> set[str]:
        state = _state(context)
        obj = _object_id(state, self.object_id)

        def removed(scene, _data) -> None:
            st = scene.tam
            _resync(scene)
            for i in reversed(range(len(st.doubtful))):
                if st.doubtful[i].obj_id == obj:
                    st.doubtful.remove(i)
            st.message = f"removed object {obj}"

        runtime.submit(context, state, "remove_object", {"obj": obj}, removed)
        return {"FINISHED"}


class _PromptOperator(_SessionOperator):
    """An operator on one object at one frame (clicks, boxes, an edited shape)."""

    object_id: IntProperty(name="Object", default=0, min=0, max=255, description="Object id (0 = active)")
    frame: IntProperty(name="Frame", description="Scene frame (default: the current frame)")

    def target(self, context) -> tuple:
        """(scene state, object id, source frame) the object_id/frame properties name."""
        state = _state(context)
        obj = _object_id(state, self.object_id)
        frame = self.frame if self.properties.is_property_set("frame") else context.scene.frame_current
        return state, obj, state.mapping.source_of(frame)


class TAM_OT_prompt_add(_PromptOperator, bpy.types.Operator):
    """Click on an object: positive adds to its mask, negative takes away"""

    bl_idname = "tam.prompt_add"
    bl_label = "Add Click"
    bl_options = {"REGISTER", "UNDO"}

    x: FloatProperty(name="X", description="Source pixels from the left")
    y: FloatProperty(name="Y", description="Source pixels from the top")
    positive: BoolProperty(name="Positive", default=True, description="Include (on) or exclude (off) this point")

    def run(self, context) -> set[str]:
        state, obj, src = self.target(context)
        params = {"frame": src, "obj": obj, "x": self.x, "y": self.y, "positive": self.positive}
        send_prompt(context, state, "add_click", params, "click")
        self.report({"INFO"}, state.message)
        return {"FINISHED"}


class TAM_OT_box_add(_PromptOperator, bpy.types.Operator):
    """Draw a box around an object to segment it"""

    bl_idname = "tam.box_add"
    bl_label = "Add Box"
    bl_options = {"REGISTER", "UNDO"}

    x0: FloatProperty(name="Left")
    y0: FloatProperty(name="Top")
    x1: FloatProperty(name="Right")
    y1: FloatProperty(name="Bottom")

    def run(self, context) -> set[str]:
        state, obj, src = self.target(context)
        x0, x1 = sorted((self.x0, self.x1))
        y0, y1 = sorted((self.y0, self.y1))
        params = {"frame": src, "obj": obj, "x0": x0, "y0": y0, "x1": x1, "y1": y1}
        send_prompt(context, state, "add_box", params, "box")
        self.report({"INFO"}, state.message)
        return {"FINISHED"}


class TAM_OT_prompts_clear(_SessionOperator, bpy.types.Operator):
    """Forget the clicks and boxes of an object on a frame"""

    bl_idname = "tam.prompts_clear"
    bl_label = "Clear Clicks"
    bl_options = {"REGISTER", "UNDO"}

    object_id: IntProperty(name="Object", default=0, min=0, max=255, description="Object id (0 = all)")
    frame: IntProperty(name="Frame", description="Scene frame (default: the current frame)")

    def run(self, context) -> set[str]:
        state = _state(context)
        frame = self.frame if self.properties.is_property_set("frame") else context.scene.frame_current
        n = clear_prompts(context, state, state.mapping.source_of(frame), self.object_id or None, "clear clicks")
        runtime.redraw()
        state.message = f"cleared {n} click{'s' if n != 1 else ''} on frame {frame}"
        return {"FINISHED"}


class TAM_OT_keyframe_delete(_SessionOperator, bpy.types.Operator):
    """Delete this keyframe of the object (its clicks or box); Track then fills the frame in"""

    bl_idname = "tam.keyframe_delete"
    bl_label = "Delete Keyframe"
    bl_options = {"REGISTER", "UNDO"}

    object_id: IntProperty(name="Object", default=0, min=0, max=255, description="Object id (0 = active)")
    frame: IntProperty(name="Frame", description="Scene frame of the keyframe")

    def run(self, context) -> set[str]:
        state = _state(context)
        obj = _object_id(state, self.object_id)
        if not clear_prompts(context, state, state.mapping.source_of(self.frame), obj, "delete keyframe"):
            raise InputError(f"object {obj} has no keyframe on frame {self.frame}")
        state.message = f"deleted the keyframe of object {obj} on frame {self.frame}"
        return {"FINISHED"}


class TAM_OT_keyframe_jump(bpy.types.Operator):
    """Go to this keyframe and make its object the active one"""

    bl_idname = "tam.keyframe_jump"
    bl_label = "Jump to Keyframe"
    bl_options = {"REGISTER"}

    object_id: IntProperty(name="Object", default=0, min=0, max=255)
    frame: IntProperty(name="Frame", description="Scene frame")

    def execute(self, context) -> set[str]:
        state = context.scene.tam
        context.scene.frame_set(self.frame)
        item = state.object_by_id(self.object_id)
        if item is not None:
            state.active_object = list(state.objects).index(item)
        return {"FINISHED"}


def _doubtful_frames(scene, frames: range | None = None, threshold: float = 0.5, limit: int = 200) -> None:
    """Fill ``scene.tam.doubtful`` with the frames (source `frames`, default all) where an
    object's confidence is low. Reads only each mask's small summary, not its pixels."""
    state = scene.tam
    state.doubtful.clear()
    with runtime.read_session(state) as session:
        found = [(conf, f, obj) for f, obj, conf in session.doubtful_frames(threshold, frames)]
    worst = sorted(found)[:limit]  # the least sure first, then shown in time order
    for conf, f, obj in sorted(worst, key=lambda t: (t[1], t[2])):
        item = state.doubtful.add()
        item.frame, item.obj_id, item.confidence = state.mapping.source_to_scene(f), int(obj), float(conf)


def _doubtful_note(scene) -> str:
    n = len(scene.tam.doubtful)
    return f"; {n} doubtful frame{'s' if n != 1 else ''} to check" if n else ""


class TAM_OT_track(_JobOperator, bpy.types.Operator):
    """Track the objects through the strip from the frames you clicked on (runs in the background)"""

    bl_idname = "tam.track"
    bl_label = "Track"
    bl_options = {"REGISTER"}  # the masks live in the session; the undo step would be empty

    direction: EnumProperty(name="Direction", items=DIRECTION_ITEMS, default="BOTH")
    frame_start: IntProperty(name="Start", description="First scene frame (default: the strip's first)")
    frame_end: IntProperty(name="End", description="Last scene frame (default: the strip's last)")
    use_edits: BoolProperty(name="Use Edited Shapes", default=False,
                            description="First make every Mask frame you edited a keyframe (Use Edited Shape)")

    def invoke(self, context, event) -> set[str]:
        from .mask_edits import edited_frames

        self._edits = edited_frames(context.scene)  # the artist reshaped splines: ask before tracking
        if self._edits and not self.properties.is_property_set("use_edits"):
            self.use_edits = True
            return context.window_manager.invoke_props_dialog(self, title="Mask edited")
        return self.execute(context)

    def draw(self, context) -> None:
        edits = getattr(self, "_edits", [])
        frames = ", ".join(str(f) for _, f in edits[:8]) + (" ..." if len(edits) > 8 else "")
        self.layout.label(text=f"The Mask was edited on frame{'s' if len(edits) != 1 else ''} {frames}.")
        self.layout.prop(self, "use_edits")

    def run(self, context) -> set[str]:
        if self.use_edits:
            from .mask_edits import use_edits_before_track

            for line in use_edits_before_track(context):
                self.report({"INFO"}, line)
        state = _state(context)
        first, last = state.scene_start, state.scene_start + state.length - 1
        start = self.frame_start if self.properties.is_property_set("frame_start") else first
        end = self.frame_end if self.properties.is_property_set("frame_end") else last
        if start > end:
            raise InputError(f"the start frame {start} is after the end frame {end}")
        src0, src1 = state.mapping.source_of(max(start, first)), state.mapping.source_of(min(end, last))

        def done(scene, result) -> str:
            _doubtful_frames(scene, range(src0, src1 + 1))
            return f"tracked {result.get('done', 0)} frames in {result.get('seconds', 0):.1f} s{_doubtful_note(scene)}"

        step = runtime.Step("track", {"start": src0, "end": src1, "direction": self.direction.lower()}, done)
        runtime.start_job(context.scene, "Tracking", [step], undo=False)
        return self.finish_job(context)


class TAM_OT_refine(_JobOperator, bpy.types.Operator):
    """Refine the doubtful frames: SAM re-segments the tracker's unsure masks from derived clicks"""

    bl_idname = "tam.refine"
    bl_label = "Refine Doubtful Frames"
    bl_options = {"REGISTER"}

    def run(self, context) -> set[str]:
        state = _state(context)
        frames = sorted({state.mapping.scene_to_source(d.frame) for d in state.doubtful}) or None

        def done(scene, result) -> str:
            _doubtful_frames(scene)
            n = int(result.get("done", 0))
            return f"refined {n} frame{'s' if n != 1 else ''}{_doubtful_note(scene)}"

        runtime.start_job(context.scene, "Refining", [runtime.Step("refine", {"frames": frames}, done)], undo=False)
        return self.finish_job(context)


class TAM_OT_cancel(bpy.types.Operator):
    """Stop the running job after the current frame (finished frames are kept)"""

    bl_idname = "tam.cancel"
    bl_label = "Cancel"
    bl_options = {"REGISTER"}

    def execute(self, context) -> set[str]:
        from . import setup

        stopped = runtime.cancel() | setup.cancel_all()
        if not stopped:
            self.report({"INFO"}, "nothing is running")
            return {"CANCELLED"}
        self.report({"INFO"}, "cancelling after the current frame")
        return {"FINISHED"}


class TAM_OT_frame_jump(bpy.types.Operator):
    """Go to a doubtful frame to check and correct it"""

    bl_idname = "tam.frame_jump"
    bl_label = "Jump to Frame"
    bl_options = {"REGISTER"}

    index: IntProperty(name="Index", default=-1, description="Entry of the doubtful list (-1 = selected)")

    def execute(self, context) -> set[str]:
        state = context.scene.tam
        i = self.index if self.index >= 0 else state.active_doubtful
        if not 0 <= i < len(state.doubtful):
            return {"CANCELLED"}
        item = state.doubtful[i]
        context.scene.frame_set(item.frame)
        obj_item = state.object_by_id(item.obj_id)
        if obj_item is not None:
            state.active_object = list(state.objects).index(obj_item)
        return {"FINISHED"}


CLASSES = (
    TAM_OT_session_new,
    TAM_OT_object_add,
    TAM_OT_object_remove,
    TAM_OT_prompt_add,
    TAM_OT_box_add,
    TAM_OT_prompts_clear,
    TAM_OT_keyframe_delete,
    TAM_OT_keyframe_jump,
    TAM_OT_track,
    TAM_OT_refine,
    TAM_OT_cancel,
    TAM_OT_frame_jump,
)
