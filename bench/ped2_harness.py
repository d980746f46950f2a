"""The Ped2 benchmark harness shared by `bench/ped2.py` and the real-data tests: train a scorer on
the Ped2 training videos in one process (`vad.training.local.fit`), report the pseudo-anomaly AUC of
held-out training videos and the frame-level AUC of the test videos. Each scorer's settings are in its
record (`ModelMeta.benchmarks["ped2"]`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vad.config import DecodeConfig
from vad.datasets.ped2 import SPLITS, Ped2, load_ped2
from vad.models.registry import BenchmarkSettings, LearningType
from vad.models.scorers import SCORERS, scorer_meta

from bench.protocol import Design


def ped2_settings(variant: str) -> dict[str, BenchmarkSettings]:
    """name -> the `BenchmarkSettings` of every scorer with Ped2 settings of `variant`: `full` (the
    benchmark's), `fast` (the CI variant), or a scorer's own ablations."""
    return {name: scorer_meta(name).benchmarks["ped2"][variant] for name in SCORERS if variant in scorer_meta(name).benchmarks.get("ped2", {})}


def ped2_smoothing(name: str, variant: str) -> int:
    """The moving-average window a scorer's Ped2 settings ask for (1: none)."""
    return ped2_settings(variant)[name].smoothing


# Frame scores are the papers' whole-frame errors (score_patch unset): the worst-window score, with the
# window fixed a priori at one pedestrian (an eighth of the frame height), scored lower on Ped2 for all
# four scorers (README) and was not adopted.
VARIANTS = tuple(dict.fromkeys(["full", "fast", *(v for n in SCORERS for v in scorer_meta(n).benchmarks.get("ped2", {}))]))
PED2_SETTINGS = {variant: ped2_settings(variant) for variant in VARIANTS}


def training_decodes(decode: DecodeConfig, spec: list) -> list[DecodeConfig]:
    """[stride] or [stride, "x2", "x3"]: the latter adds clips sampled every 2nd / 3rd frame."""
    stride, *steps = spec
    out = [decode.model_copy(update={"stride": stride})]
    out += [decode.model_copy(update={"stride": stride, "frame_step": int(s[1:])}) for s in steps]
    return out


@dataclass
class BenchResult:
    scorer: str
    train_s: float
    clips_per_s: float
    train_clips: int
    test_clips: int
    final_loss: float
    val_pseudo: dict | None = None  # pseudo-anomaly reports {normalisation: report} on held-out training videos
    normalisation: str = "minmax"  # per-video score scale of the scorer's paper (`evaluation_normalisation`)
    split: str | None = None  # the Ped2 split scored (None: the test folder was not read)
    labels: dict = field(default_factory=dict)  # video -> frame labels, the split's videos only
    scores: dict = field(default_factory=dict)  # video -> frame scores as the scorer gives them
    calibration: object = None  # vad.models.calibration.Calibration of the held-out training clips' frame scores

    def reports(self, normalisations: tuple[str, ...], smoothing: int = 1) -> dict[str, dict[str, dict]]:
        """{split: {normalisation: frame-level report}} for every split inside the one scored (an `all`
        run also gives `dev` and `test`: one fit, the same scores)."""
        return split_reports(self.labels, self.scores, self.split, normalisations, smoothing)

    @property
    def auc_micro(self) -> float:
        """Micro AUC of the scored split under the paper's normalisation (nan when nothing was scored)."""
        if self.split is None:
            return float("nan")
        return self.reports((self.normalisation,))[self.split][self.normalisation]["auc_micro"]

    @property
    def val_pseudo_auc(self) -> float:
        return self.val_pseudo[self.normalisation]["auc_micro"] if self.val_pseudo else float("nan")


def split_reports(labels: dict, scores: dict, scored: str | None, normalisations: tuple[str, ...], smoothing: int = 1) -> dict:
    """{split: {normalisation: report}} for `scored` and the splits inside it, from per-video labels and
    scores (`vad.evaluation.metrics.frame_level_report`)."""
    from vad.evaluation.metrics import frame_level_report

    if scored is None:
        return {}
    inside = [s for s in SPLITS if set(SPLITS[s]) <= set(SPLITS[scored])]
    out = {}
    for split in inside:
        videos = SPLITS[split]
        out[split] = {
            norm: frame_level_report([labels[v] for v in videos], [scores[v] for v in videos], norm, smoothing)
            for norm in normalisations
        }
    return out


def clips_with_times(folder: Path, decode, keys: set[str] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Per video (all, or those in `keys`): its clips (uint8, `frames`) and their first and last frames and times
    (`start_frame`, `end_frame`, `start_s`, `end_s`), as the scoring job cuts them."""
    from vad.config import SourceConfig
    from vad.io.sources import list_videos
    from vad.video.clips import iter_clips

    videos, _ = list_videos(SourceConfig(uri=str(folder)), run_date="2000-01-01")
    out = {}
    for video in videos:
        if keys is not None and video.key not in keys:
            continue
        clips = list(iter_clips(video, decode))
        out[video.key] = {"frames": np.stack([c.frames for c in clips]), "start_frame": np.array([c.start_frame for c in clips]),
                          "end_frame": np.array([c.end_frame for c in clips]), "start_s": np.array([c.start_time_s for c in clips]),
                          "end_s": np.array([c.end_time_s for c in clips])}
    return out


def _clips_with_starts(folder: Path, decode, keys: set[str] | None = None) -> dict[str, tuple[list[int], np.ndarray]]:
    return {key: (v["start_frame"].tolist(), v["frames"]) for key, v in clips_with_times(folder, decode, keys).items()}


def split_training_videos(ped2: Ped2, held_out: int, seed: int = 0) -> tuple[set[str], set[str]]:
    """(training, validation) video keys of the Ped2 training folder: `held_out` videos by seed."""
    keys = sorted(p.name for p in ped2.train_dir.iterdir() if p.is_dir())
    chosen = set(np.random.default_rng(seed).choice(keys, held_out, replace=False).tolist()) if held_out else set()
    return set(keys) - chosen, chosen


def benchmark_scorer(
    name: str,
    hparams: dict,
    decode,
    train_decode,  # one DecodeConfig, or several whose clips are pooled (temporal-stride augmentation)
    *,
    epochs: int,
    batch_size: int = 8,
    lr: float = 1e-3,
    max_train_clips: int | None = None,
    seed: int = 0,
    smoothing: int = 1,
    held_out: int = 0,
    split: str | None = "dev",
    ped2: Ped2 | None = None,
) -> BenchResult:
    """Train `name` on the Ped2 training videos (all normal; less `held_out` validation videos, whose
    pseudo-anomaly AUC is reported, `vad.evaluation.pseudo_anomalies`) and score the test videos of
    `split` ('dev' 01-06, 'test' 07-12, 'all'; None: the test folder is not read). Only the split's
    videos are decoded and only their labels read.

    Nothing is selected on the test set: fixed epochs, no checkpoint picking, no threshold; whether a
    run may read 07-12 at all is `bench/protocol.py`'s gate, in front of this."""
    import time

    import torch

    from vad.evaluation.metrics import frames_from_clips
    from vad.evaluation.pseudo_anomalies import pseudo_anomaly_report
    from vad.models.scorers import build_scorer, evaluation_normalisation
    from vad.training.local import fit, score_clips

    normalise = evaluation_normalisation(name)
    ped2 = ped2 or load_ped2()
    train_keys, val_keys = split_training_videos(ped2, held_out, seed)
    train_decodes = train_decode if isinstance(train_decode, (list, tuple)) else [train_decode]
    train = np.concatenate(
        [c for d in train_decodes for _, c in _clips_with_starts(ped2.train_dir, d, train_keys).values()]
    )
    if max_train_clips and len(train) > max_train_clips:
        train = train[np.random.default_rng(seed).choice(len(train), max_train_clips, replace=False)]
    torch.manual_seed(seed)  # the initial weights too: `fit` seeds only the training that follows
    model = build_scorer(name, **scorer_meta(name).hparams_for(decode.clip_len, data_files(hparams)))
    result = fit(model, train, epochs=epochs, batch_size=batch_size, lr=lr, val_fraction=val_fraction(name), seed=seed)
    frames = decode.model_copy(update={"clip_len": 1, "stride": 1, "frame_step": 1})
    val_videos = [clips[:, 0] for _, clips in _clips_with_starts(ped2.train_dir, frames, val_keys).values()]
    val = None
    if val_videos:
        val = {
            norm: pseudo_anomaly_report(
                model, val_videos, decode.clip_len, stride=decode.stride, batch_size=batch_size, seed=seed,
                smoothing=smoothing, normalise=norm,
            )
            for norm in dict.fromkeys(("none", normalise))
        }
    labels, scores, n_clips, score_s = {}, {}, 0, 0.0
    if split is not None:
        labels = ped2.test_labels(split)
        t0 = time.perf_counter()
        for key, (starts, clips) in _clips_with_starts(ped2.test_dir, decode, set(labels)).items():
            frame_scores = score_clips(model, clips, batch_size, field="frame_scores")
            n_clips += len(frame_scores)
            rows = [(s, decode.frame_step, f) for s, f in zip(starts, frame_scores)]
            scores[key] = frames_from_clips(len(labels[key]), rows, "mean")
        score_s = time.perf_counter() - t0
    return BenchResult(
        name, result.seconds, n_clips / score_s if score_s else float("nan"), len(train), n_clips,
        result.history[-1]["train/loss"], val, normalise, split, labels, scores, result.calibration,
    )


def data_files(hparams: dict) -> dict:
    """A scorer's weights named by a bare file name in its benchmark settings (e.g. the object
    detector's `yolox_nano.onnx`) resolved against the benchmark data folder; the design records the
    name, so its digest does not depend on where a machine keeps the data."""
    from vad.datasets import data_dir

    out = dict(hparams)
    name = out.get("detector")
    if isinstance(name, str) and "/" not in name:
        folder = data_dir(name)
        if folder is None:
            raise FileNotFoundError(f"{name}: not found in the benchmark data folder (../shared/data or $VAD_DATA)")
        out["detector"] = str(folder / name)
    return out


def val_fraction(name: str) -> float:
    """The share of training clips `fit` holds out: a fitted scorer calibrates on 10% (as
    bench/ped2_patch_knn.py chose its settings), a trained one validates on 5%."""
    return 0.1 if scorer_meta(name).learning_type is LearningType.FITTED else 0.05


def design(name: str, variant: str, hparams: dict, decode, train_spec: list, *, epochs: int, lr: float,
           batch_size: int = 8, smoothing: int = 1, held_out: int = 0) -> Design:
    """Every setting that decides `name`'s Ped2 figures, as the protocol records it: the hyper-parameters
    as the scorer is built (its defaults included, so a changed default is a new design), the test
    decode, the training clips, the schedule, how clip scores become frame scores."""
    import json

    from vad.models.scorers import build_scorer

    built = build_scorer(name, **scorer_meta(name).hparams_for(decode.clip_len, hparams)).hparams()

    def frames(d: DecodeConfig) -> dict:  # what decides the pixels a model sees (not threads, batch sizes...)
        return d.model_dump(mode="json", include={"clip_len", "stride", "frame_step", "resize", "grayscale"})

    settings = {
        "hparams": built,
        "decode": frames(decode),
        "train_decodes": [frames(d) for d in training_decodes(decode, train_spec)],
        "train_videos": f"Ped2 training videos, {held_out} held out" if held_out else "all 16 Ped2 training videos",
        "epochs": epochs, "lr": lr, "batch_size": batch_size, "val_fraction": val_fraction(name),
        "frame_scores": "mean over the clips holding the frame", "smoothing": smoothing,
    }
    return Design("ped2", name, variant, json.loads(json.dumps(settings, default=str)))
