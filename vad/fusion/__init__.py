"""Fused models: several models' scores of the same videos, each on its own held-out normal scale
(`vad.models.calibration`), combined by frame into the rows of one model (`vad fuse`)."""
