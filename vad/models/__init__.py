"""Models: the scorers (`scorers/<name>/`), the pretrained backbones (`backbones/`), their records
(`registry`), checkpoints and how they run for inference."""
