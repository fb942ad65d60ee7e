"""Backends and their networks: classic (OpenCV), SAM, XMem, E2FGVI-HQ, and the weights registry.

Nothing here imports bpy.
"""
