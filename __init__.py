"""Track Anything for Blender: click an object, track it through the shot, get mattes, remove it.

Blender extension entry point. Nothing here imports bpy or torch at import time, so the
engine below (`tam_blender_addon`, `models`) can be imported by the worker and the tests
under the fixed name ``track_anything``.
"""


def register() -> None:
    """Register operators, properties and panels (Blender calls this on enable)."""
    from . import operators, ui

    operators.register()
    ui.register()


def unregister() -> None:
    """Unregister everything `register` added, in reverse order."""
    from . import operators, ui

    ui.unregister()
    operators.unregister()
