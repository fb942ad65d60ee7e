"""Panels, the click tool and the preview overlay (preferences live with the operators)."""

from __future__ import annotations


def _classes() -> list:
    from . import click_tool, clip_panel, panels

    return [*click_tool.CLASSES, *panels.CLASSES, *clip_panel.CLASSES]


def register() -> None:
    """Register panels and the click tool; add the overlay (not in background mode)."""
    import bpy

    from . import overlay

    for cls in _classes():
        bpy.utils.register_class(cls)
    overlay.register()


def unregister() -> None:
    """Remove the overlay, then unregister what register() added."""
    import bpy

    from . import overlay

    overlay.unregister()
    for cls in reversed(_classes()):
        bpy.utils.unregister_class(cls)
