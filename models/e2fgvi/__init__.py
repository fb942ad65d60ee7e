"""E2FGVI-HQ video inpainting: the network (no mmcv), the official test-time procedure, and
the production Inpainter backend (any resolution and length, bounded memory, streaming)."""
