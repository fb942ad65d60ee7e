"""The engine: importable and testable without bpy (session, frames, pipeline, worker, CLI).

Blender-side modules (client, session reading) import no torch and no OpenCV; worker-side
modules (pipeline, worker) may.
"""
