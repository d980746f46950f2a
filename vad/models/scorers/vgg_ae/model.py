"""VGG16-encoder autoencoder with pixel-level anomaly masks (the seed system 004).

Each frame goes through the first three blocks of VGG16 (`features.0`-`features.16`,
torchvision's layer indices, so a user's torchvision VGG16 state dict loads
as is; ImageNet weights cannot be downloaded here, so without one the encoder
trains from scratch). A light decoder reconstructs the frame. The per-pixel
squared error gives the anomaly mask: pixels above a percentile threshold.
The threshold is "calibrated" (that percentile of pixel errors on held-out
normal frames, stored with the model) or "per_frame" (the seed's dynamic
percentile of each frame's own errors).
"""

from __future__ import annotations

import torch
from torch import nn

from vad.models.scorers.base import ScoreOutput, TrainedScorer, frame_score_from_errors

# torchvision vgg16 `features` up to pool3, with its layer indices.
_VGG16_BLOCKS = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M"]
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg16_features(blocks=_VGG16_BLOCKS) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for item in blocks:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU(inplace=True)]
            channels = item
    return nn.Sequential(*layers)


class VGGAutoencoder(TrainedScorer):
    name = "vgg_ae"

    def __init__(
        self, *, mask_percentile: float = 99.0, mask_mode: str = "calibrated", width_divisor: int = 1,
        score_patch: int | None = None,
    ):
        super().__init__()
        if mask_mode not in ("calibrated", "per_frame"):
            raise ValueError(f"mask_mode must be 'calibrated' or 'per_frame', got {mask_mode!r}")
        self.mask_percentile, self.mask_mode, self.width_divisor = mask_percentile, mask_mode, width_divisor
        self.score_patch = score_patch
        blocks = [b if b == "M" else b // width_divisor for b in _VGG16_BLOCKS]
        self.features = vgg16_features(blocks)
        c = blocks[-2]
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(c, 128 // width_divisor, 2, stride=2), nn.ReLU(inplace=True),
            nn.Conv2d(128 // width_divisor, 128 // width_divisor, 3, padding=1), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(128 // width_divisor, 64 // width_divisor, 2, stride=2), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(64 // width_divisor, 32, 2, stride=2), nn.ReLU(inplace=True),
            nn.Conv2d(32, 1, 3, padding=1), nn.Sigmoid(),
        )
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))
        self.register_buffer("pixel_threshold", torch.tensor(float("nan")))

    def load_vgg16(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load the encoder from a torchvision VGG16 state dict (keys `features.N.weight`)."""
        if self.width_divisor != 1:
            raise ValueError("pretrained VGG16 weights need width_divisor=1")
        wanted = self.features.state_dict()
        mine = {k: state_dict.get(f"features.{k}") for k in wanted}
        missing = sorted(k for k, v in mine.items() if v is None)
        if missing:
            raise ValueError(f"not a torchvision VGG16 state dict: missing features.{missing[0]} and {len(missing) - 1} more")
        self.features.load_state_dict(mine)

    def _frames(self, clips: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        if clips.ndim != 4:
            raise ValueError(f"vgg_ae expects (B, T, H, W) grayscale clips, got {tuple(clips.shape)}")
        b, t, h, w = clips.shape
        if h % 8 or w % 8:
            raise ValueError(f"vgg_ae needs height and width divisible by 8, got {(h, w)}")
        return clips.reshape(b * t, 1, h, w), b, t

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        frames, b, t = self._frames(clips)
        rgb = (frames.expand(-1, 3, -1, -1) - self.mean) / self.std
        return self.decoder(self.features(rgb)).view(clips.shape)

    def training_loss(self, clips: torch.Tensor) -> torch.Tensor:
        return torch.mean((self(clips) - clips) ** 2)

    def pixel_errors(self, clips: torch.Tensor) -> torch.Tensor:
        return (self(clips) - clips) ** 2

    def calibrate(self, clips: torch.Tensor) -> float:
        """Set the calibrated pixel threshold from held-out normal clips; returns it."""
        with torch.inference_mode():
            errors = self.pixel_errors(clips).flatten()
        sample = errors[torch.randperm(errors.numel(), generator=torch.Generator().manual_seed(0))[:1_000_000]]
        self.pixel_threshold.fill_(float(torch.quantile(sample.float(), self.mask_percentile / 100)))
        return float(self.pixel_threshold)

    def score(self, clips: torch.Tensor) -> ScoreOutput:
        errors = self.pixel_errors(clips)  # (B, T, H, W)
        frame_scores = frame_score_from_errors(errors, self.score_patch)
        if self.mask_mode == "per_frame" or torch.isnan(self.pixel_threshold):
            flat = errors.flatten(2).float()
            threshold = torch.quantile(flat, self.mask_percentile / 100, dim=2)[..., None, None]
        else:
            threshold = self.pixel_threshold
        return ScoreOutput(score=frame_scores.mean(1), frame_scores=frame_scores, mask=errors > threshold, pixel_scores=errors)

    def hparams(self) -> dict:
        return {
            "mask_percentile": self.mask_percentile, "mask_mode": self.mask_mode, "width_divisor": self.width_divisor,
            "score_patch": self.score_patch,
        }


def vgg_ae(
    *, mask_percentile: float = 99.0, mask_mode: str = "calibrated", width_divisor: int = 1,
    score_patch: int | None = None,
) -> VGGAutoencoder:
    """Frames are scored one by one: the builder takes no clip length."""
    return VGGAutoencoder(mask_percentile=mask_percentile, mask_mode=mask_mode, width_divisor=width_divisor, score_patch=score_patch)
