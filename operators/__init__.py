"""Blender operators (tam.*), scene state and preferences: with ui/ the only code that imports bpy."""

from __future__ import annotations


def _classes() -> list:
    from . import mattes, preferences, session_ops, setup

    return [*preferences.CLASSES, *session_ops.CLASSES, *mattes.CLASSES, *setup.CLASSES]


def register() -> None:
    """Register the property groups, preferences and operators."""
    import bpy

    from . import props

    props.register()
    for cls in _classes():
        bpy.utils.register_class(cls)


def unregister() -> None:
    """Stop the worker, then unregister what register() added."""
    import bpy

    from . import props, runtime

    runtime.shutdown()
    for cls in reversed(_classes()):
        bpy.utils.unregister_class(cls)
    props.unregister()
