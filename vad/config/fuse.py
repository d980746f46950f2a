"""`vad fuse`: a fused model of members that scored the same videos."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from vad.config.common import _Section
from vad.config.score import OutputConfig, _NightlyConfig


class FusionMemberConfig(_Section):
    """One model of a fused model."""

    model: str = Field(
        ..., description="its model: models:/name@alias, a checkpoint path or s3:// uri; {camera} is filled in per camera (a fleet's)"
    )
    weight: float = Field(1.0, gt=0, description="its calibrated score is multiplied by this before the rule")
    label: str | None = Field(None, description="short name in the fused model's name and reasons; null = its scorer (pred, objects, ...)")


class FusionConfig(_Section):
    """A fused model: members' scores of the same videos, each on its held-out normal scale, combined by frame."""

    name: str | None = Field(None, description="the fused model's name in the tables; null = fusion(<labels>), e.g. fusion(pred,objects)")
    members: list[FusionMemberConfig] = Field(..., min_length=2, description="the first member's clips are the fused rows' clips")
    rule: Literal["sum", "max"] = Field("sum", description="sum = add the members' calibrated scores; max = the largest")
    threshold_quantile: float = Field(
        0.999, ge=0.5, le=0.9999,
        description="the fused threshold: fused frame scores of held-out normal footage exceed it at most 1 - this of the time "
        "(bounded from the members' recorded calibrations)",
    )
    cameras: tuple[str, ...] = Field((), description="fuse only these cameras; empty = every camera a member has scored")
    dates: tuple[str, ...] = Field((), description="fuse only these nights (YYYY-MM-DD); empty = every night")
    workers: int = Field(8, ge=1, le=64, description="videos read, fused and written at once (threads on the driver)")

    @model_validator(mode="after")
    def _labels_differ(self) -> "FusionConfig":
        labels = [m.label for m in self.members if m.label]
        if len(set(labels)) < len(labels):
            raise ValueError(f"fusion.members: labels must differ, got {labels}")
        return self


class FuseJobConfig(_NightlyConfig):
    """`vad fuse`: the fused model's rows from its members' rows of the same results root."""

    output: OutputConfig
    fusion: FusionConfig
    run_name: str | None = Field(None, description="MLflow run name; null = fuse-<date>")
