"""SAM 2.1 (Hiera image encoder, prompt encoder, mask decoder, memory encoder and memory attention),
re-implemented state-dict compatible with the four official SAM 2.1 checkpoints, with the official
video predictor's semantics and a streaming product predictor on top."""
