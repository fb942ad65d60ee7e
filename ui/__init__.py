"""Panels, overlay drawing, preferences and progress display."""


def register() -> None:
    """Register panels and preferences."""


def unregister() -> None:
    """Unregister what register() added."""
