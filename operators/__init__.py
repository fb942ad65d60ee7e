"""Blender operators (tam.*): the only place besides ui/ and the root that imports bpy."""


def register() -> None:
    """Register all operators and property groups."""


def unregister() -> None:
    """Unregister what register() added."""
