"""What puts a model's frame scores on a scale other models share: statistics of its frame scores on
held-out normal footage, recorded when it is trained or fitted.

Scores of different scorers mean different things (a reconstruction error, -PSNR, a calibrated density);
`Calibration.scale` maps a model's scores so that its held-out normal minimum is 0 and their 99.9th
percentile is 1 (AI-VAD's rule), which is what fusion (`vad.fusion`) adds or compares. The record also
keeps the held-out quantiles at `LEVELS`, from which a fused model's threshold is bounded without
scoring anything again. It is plain JSON-like data: it travels in checkpoints (loaded `weights_only`) and
as a registry tag (`TAG`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

TAG = "vad.calibration"  # a registered model version's tag: a calibration set after registration, read before its checkpoint's
LEVELS = (0.5, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999)
HIGH = 0.999  # the quantile that `scale` maps to 1


@dataclass(frozen=True)
class Calibration:
    """Held-out normal frame-score statistics of one model."""

    low: float  # the minimum (scaled to 0)
    high: float  # the 99.9th percentile (scaled to 1)
    median: float
    mad: float  # median absolute deviation (a robust z-score: (x - median) / (1.4826 mad))
    quantiles: tuple[float, ...]  # at LEVELS, in the model's own units
    frames: int  # how many frame scores they come from
    source: str = "held-out normal clips"  # where: held-out videos, held-out clips, or (weak) training clips

    @classmethod
    def from_frame_scores(cls, scores, source: str = "held-out normal clips") -> Calibration:
        values = np.asarray(scores, dtype=np.float64).ravel()
        values = values[np.isfinite(values)]
        if values.size == 0:
            raise ValueError("no finite frame scores to calibrate on")
        median = float(np.median(values))
        return cls(
            low=float(values.min()), high=float(np.quantile(values, HIGH)), median=median,
            mad=float(np.median(np.abs(values - median))), quantiles=tuple(float(q) for q in np.quantile(values, LEVELS)),
            frames=int(values.size), source=source,
        )

    @property
    def span(self) -> float:
        return max(self.high - self.low, 1e-12)

    def scale(self, scores):
        """Scores in the model's units -> the common scale (held-out normal: min 0, 99.9th percentile 1)."""
        return (np.asarray(scores, dtype=np.float64) - self.low) / self.span

    def scaled_quantile(self, level: float) -> float:
        """The held-out quantile at `level` on the common scale (interpolated between `LEVELS`; clamped to their range)."""
        if not LEVELS[0] <= level <= LEVELS[-1]:
            raise ValueError(f"quantile level {level} is outside the recorded {LEVELS[0]}..{LEVELS[-1]}")
        # interpolate on the tail's log scale: 0.999 sits as far from 0.99 as 0.99 from 0.9
        x = -np.log10(1.0 - np.asarray(LEVELS))
        return float(self.scale(np.interp(-np.log10(1.0 - level), x, self.quantiles)))

    def to_dict(self) -> dict:
        out = asdict(self)
        out["quantiles"] = list(self.quantiles)
        return out

    @classmethod
    def from_dict(cls, record: dict) -> Calibration:
        fields = {**record, "quantiles": tuple(float(q) for q in record["quantiles"])}
        if len(fields["quantiles"]) != len(LEVELS):
            raise ValueError(f"a calibration holds {len(LEVELS)} quantiles, this one {len(fields['quantiles'])}")
        return cls(**fields)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Calibration:
        return cls.from_dict(json.loads(text))

    def metrics(self) -> dict[str, float]:
        """What MLflow logs of it."""
        return {"calibration/low": self.low, "calibration/high": self.high, "calibration/median": self.median,
                "calibration/frames": float(self.frames)}
