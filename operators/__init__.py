"""Blender operators (tam.*), scene state and preferences: with ui/ the only code that imports bpy."""

from __future__ import annotations


def _classes() -> list:
    from . import mask_edits, mattes, preferences, session_ops, setup

    return [*preferences.CLASSES, *session_ops.CLASSES, *mattes.CLASSES, *mask_edits.CLASSES, *setup.CLASSES]


def register() -> None:
    """Register the property groups, preferences and operators."""
    import bpy

    from . import props, session_ops

    props.register()
    for cls in _classes():
        bpy.utils.register_class(cls)
    session_ops.add_handlers()


def unregister() -> None:
    """Stop the worker, then unregister what register() added."""
    import bpy

    from . import props, runtime, session_ops, setup

    session_ops.remove_handlers()
    runtime.shutdown()
    setup.cancel_all()  # their timers stop the child processes at the next tick
    for cls in reversed(_classes()):
        bpy.utils.unregister_class(cls)
    props.unregister()
