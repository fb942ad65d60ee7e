"""Add-on preferences: worker interpreter, device, backend, checkpoints, resolution, memory."""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, EnumProperty, IntProperty, StringProperty

from . import runtime, setup
from .props import BACKEND_ITEMS

DEVICE_ITEMS = [
    ("AUTO", "Auto", "The best available: CUDA, then Apple MPS, then the CPU"),
    ("CUDA", "CUDA", "An NVIDIA GPU"),
    ("MPS", "MPS", "Apple silicon GPU"),
    ("CPU", "CPU", "The processor (slow for the neural backend)"),
]
SAM_ITEMS = [
    ("vit_b", "ViT-B", "Smallest and fastest SAM (375 MB)"),
    ("vit_l", "ViT-L", "Larger SAM (1.2 GB)"),
    ("vit_h", "ViT-H", "Largest, most accurate SAM (2.6 GB)"),
]
SAM2_ITEMS = [
    ("tiny", "Tiny", "Fastest SAM 2.1 (about 149 MB)"),
    ("small", "Small", "SAM 2.1 small (about 176 MB)"),
    ("base_plus", "Base+", "SAM 2.1 B+: the balance of speed and quality (about 309 MB)"),
    ("large", "Large", "Most accurate, slowest SAM 2.1 (about 857 MB)"),
]


def _default_weights_dir() -> str:
    """The add-on's user folder for checkpoints (created on first use)."""
    return str(runtime.user_dir("weights"))


class TAM_AddonPreferences(bpy.types.AddonPreferences):
    """Where the worker runs and what it runs."""

    bl_idname = runtime.ADDON

    worker_python: StringProperty(
        name="Worker Python", subtype="FILE_PATH",
        description="Python 3.11 with torch that runs the tracking (empty: the environment created below, "
                    "else Blender's own Python)",
    )
    device: EnumProperty(name="Device", items=DEVICE_ITEMS, default="AUTO")
    backend: EnumProperty(name="Backend", items=BACKEND_ITEMS, default="NEURAL",
                          description="Default backend of new sessions")
    sam_model: EnumProperty(name="SAM Model", items=SAM_ITEMS, default="vit_b")
    sam2_model: EnumProperty(name="SAM 2.1 Model", items=SAM2_ITEMS, default="base_plus",
                             description="Model size of new SAM 2.1 sessions")
    checkpoint_dir: StringProperty(name="Checkpoints", subtype="DIR_PATH", default="",
                                   description="Folder of the checkpoints (empty: the add-on's user folder)")
    max_resolution: IntProperty(name="Processing Resolution", default=480, min=0, max=4320, subtype="PIXEL",
                                description="Shorter side the tracker works at (480 as in XMem's own "
                                "evaluation; 0 = the source's); mattes always come back at full size")
    mem_every: IntProperty(name="Memory Every", default=5, min=1, max=100,
                           description="Store every Nth tracked frame in the tracker's memory")
    max_memory_frames: IntProperty(name="Memory Frames", default=10, min=1, max=100,
                                   description="At most this many frames in working memory (bounds GPU memory)")
    half_precision: BoolProperty(name="Half Precision (GPU)", default=True,
                                 description="Track and remove in fp16 on the GPU: about twice as fast, mattes "
                                 "within about 1% of full precision. Off: exact fp32. No effect on the CPU")

    def draw(self, context) -> None:
        layout = self.layout
        s = runtime.settings(context)
        box = layout.box()
        box.label(text=setup.status_line(s), icon="INFO")
        for key in ("env_plan", "env", "weights"):
            task = setup.TASKS.get(key)
            if task is not None:
                row = box.row()
                row.label(text=f"{task.label}: {task.result or task.last_line or 'starting...'}")
                if not task.result:
                    row.operator("tam.cancel", text="", icon="X")
        col = layout.column()
        row = col.row(align=True)
        row.prop(self, "worker_python")
        setup.draw_env_buttons(row)
        row = col.row(align=True)
        row.prop(self, "checkpoint_dir")
        row.operator("tam.weights_download", text="Download")
        col.label(text=f"Checkpoints folder in use: {s.checkpoint_dir}")
        col.separator()
        col.prop(self, "backend")
        col.prop(self, "device")
        col.prop(self, "sam_model")
        col.prop(self, "sam2_model")
        col.prop(self, "max_resolution")
        row = col.row(align=True)
        row.prop(self, "mem_every")
        row.prop(self, "max_memory_frames")
        col.prop(self, "half_precision")


CLASSES = (TAM_AddonPreferences,)
