"""One record per model, scorer or backbone, and the registries that hold them.

A record says what the model needs of its input (clip length, frame size, colour, pixel scale),
what it gives (feature dimension, masks), how it is trained, how its paper puts one video's scores
on a common scale for the frame-level AUC, a tiny configuration for quick checks, and the settings
it is benchmarked with. The decode stages, MIL, evaluation, benchmarks and tests read the record;
nothing else keeps a table per model. A model registers its record from its own module or folder.
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

NORMALISATIONS = ("minmax", "regularity", "none")


class LearningType(str, enum.Enum):
    """How a model learns what normal is; `vad.training` asks it once and hands the model to that learner."""

    TRAINED = "trained"  # by gradient, epochs over normal clips (`TrainedScorer.training_loss`)
    FITTED = "fitted"  # in one pass over normal clips: a memory bank, densities (`FittedScorer`)
    WEAKLY_SUPERVISED = "weakly_supervised"  # from videos labelled only anomalous or normal (MIL bags)
    PRETRAINED = "pretrained"  # not trained by vad (backbones)


@dataclass(frozen=True)
class BenchmarkSettings:
    """How a model is benchmarked on one dataset variant (e.g. Ped2 `full`): what `bench/` builds, decodes,
    trains and evaluates with. The accuracy protocol records these before a test run."""

    hparams: dict  # builder keyword arguments
    decode: Any  # vad.config.DecodeConfig of the test videos (and, with `train_strides`, of the training footage)
    train_strides: list  # training clips: strides in frames, and "x2"/"x3" for frame steps (bench/ped2_harness.training_decodes)
    epochs: int  # 1 for fitted models
    lr: float  # 0.0 for fitted models
    smoothing: int = 1  # moving-average window over frame scores before evaluation (1: none)


@dataclass(frozen=True)
class Tiny:
    """A small configuration of the model and an input batch shape it accepts, for quick checks."""

    hparams: dict
    input_shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelMeta:
    name: str
    builder: Callable[..., Any]  # keyword-only; returns the model in eval mode or ready to train
    paper: str
    clip_len: int | None = None  # frames per clip it needs; None: any (the job's decode.clip_len)
    input_size: tuple[int, int] | None = None  # (height, width) it was trained at; None: any
    size_multiple: int = 1  # height and width must be multiples of this
    grayscale: bool = True  # False: RGB clips (decode.grayscale: false)
    input_range: float = 1.0  # clips arrive as pixels / 255 * input_range (255: raw 0-255 pixels)
    normalisation: str = "pixels / 255"  # what the model does to its input, in words
    feature_dim: int | None = None  # backbones: the length of one clip's feature
    evaluation_normalisation: str = "minmax"  # per-video score scale of its paper (`vad.evaluation.metrics`)
    learning_type: LearningType = LearningType.TRAINED  # which learner `vad.training` hands it to
    localises: bool = False  # True: `score` also returns pixel masks
    uint8_input: bool = False  # True: `score` takes the decoded uint8 clips as they are (work done in OpenCV/ONNX, not torch)
    precision: str = "bf16"  # what `precision: auto` runs it at on a GPU: bf16, or fp32 where bf16 measured slower or cannot help
    tiny: Tiny | None = None
    benchmarks: dict[str, dict[str, BenchmarkSettings]] = field(default_factory=dict)  # {"ped2": {"full": ..., "fast": ...}}

    def __post_init__(self):
        if self.evaluation_normalisation not in NORMALISATIONS:
            raise ValueError(f"{self.name}: evaluation_normalisation must be one of {NORMALISATIONS}")
        if self.precision not in ("bf16", "fp32"):
            raise ValueError(f"{self.name}: precision must be bf16 or fp32")
        object.__setattr__(self, "learning_type", LearningType(self.learning_type))

    def hparams_for(self, clip_len: int | None, hparams: dict) -> dict:
        """The builder's keyword arguments: `hparams`, with the job's `clip_len` where the builder takes one."""
        takes = self.builder is not None and "clip_len" in inspect.signature(self.builder).parameters
        return {"clip_len": clip_len, **hparams} if takes and clip_len is not None else dict(hparams)


class ModelRegistry:
    """Records by name; registering a name twice is an error, so two models cannot shadow each other."""

    def __init__(self, kind: str):
        self.kind = kind
        self._records: dict[str, ModelMeta] = {}

    def register(self, meta: ModelMeta) -> ModelMeta:
        if meta.name in self._records:
            raise ValueError(f"{self.kind} {meta.name!r} is already registered")
        self._records[meta.name] = meta
        return meta

    def meta(self, name: str) -> ModelMeta:
        try:
            return self._records[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; available: {', '.join(sorted(self._records))}") from None

    def build(self, name: str, **kwargs):
        """The model `name` built with `kwargs`; errors inside the builder are its own, not 'unknown'."""
        return self.meta(name).builder(**kwargs)

    def __contains__(self, name: object) -> bool:
        return name in self._records

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._records))

    def __len__(self) -> int:
        return len(self._records)


def import_submodules(package: str, path) -> None:
    """Import every module or folder of a package, so that each registers its own record."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(path):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")
