"""UCSD Ped2 (Mahadevan et al. 2010) from the shared data folder, for tests and benchmarks.

The archive is never part of the project: it is read from `$VAD_DATA` or from
`../shared/data/` beside the checkout, and extracted once into a cache folder.
"""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vad.config import DecodeConfig

ARCHIVE = "ucsd_ped2.tar.gz"


def data_dir() -> Path | None:
    """Where the shared benchmark archives are, or None."""
    candidates = [os.environ.get("VAD_DATA")] if os.environ.get("VAD_DATA") else []
    repo = Path(__file__).resolve().parents[2]
    candidates += [str(repo.parent / "shared" / "data"), str(repo / "shared" / "data")]
    for candidate in candidates:
        if (Path(candidate) / ARCHIVE).is_file():
            return Path(candidate)
    return None


def cache_dir() -> Path:
    return Path(os.environ.get("VAD_CACHE", Path.home() / ".cache" / "vad"))


def _safe_extract(archive: Path, target: Path) -> None:
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")  # refuses absolute paths, links out of target, devices


@dataclass(frozen=True)
class Ped2:
    root: Path  # folder holding training/ and testing/

    @property
    def train_dir(self) -> Path:
        return self.root / "training" / "frames"

    @property
    def test_dir(self) -> Path:
        return self.root / "testing" / "frames"

    def test_videos(self) -> list[str]:
        return sorted(p.name for p in self.test_dir.iterdir() if p.is_dir())

    def test_labels(self) -> dict[str, np.ndarray]:
        """Test video name ('01'..'12') -> per-frame 0/1 labels (frame 000.jpg first)."""
        flat = np.load(self.root / "frame_labels_ped2.npy", allow_pickle=False).reshape(-1)
        labels, offset = {}, 0
        for name in self.test_videos():
            n = sum(1 for f in (self.test_dir / name).iterdir() if f.suffix.lower() in (".jpg", ".tif", ".png"))
            labels[name] = flat[offset : offset + n].astype(np.int8)
            offset += n
        if offset != len(flat):
            raise ValueError(f"Ped2 labels cover {len(flat)} frames, the test folders hold {offset}")
        return labels


def load_ped2() -> Ped2:
    """Extract (once) and return UCSD Ped2; raises FileNotFoundError when the archive is not here."""
    source = data_dir()
    if source is None:
        raise FileNotFoundError(f"{ARCHIVE} not found: set VAD_DATA to the folder that holds it")
    target = cache_dir() / "ucsd_ped2"
    root = target / "ucsd_ped2"
    if not (root / "frame_labels_ped2.npy").is_file():
        target.mkdir(parents=True, exist_ok=True)
        _safe_extract(source / ARCHIVE, target)
    return Ped2(root)


# name -> (hparams, test decode, training decodes, epochs, lr); `fast` is the CI variant.
# Test clips overlap so that every frame is scored in context: the cuboid autoencoders slide by one
# frame, as Hasan et al. and Chong & Tay evaluate (a frame's score is the mean over its cuboids); the
# predictor's clips start every 5 frames, so each frame after the third is predicted, not copied.
# Frame scores are the papers' whole-frame errors (score_patch unset): the worst-window score, with the
# window fixed a priori at one pedestrian (an eighth of the frame height), scored lower on Ped2 for all
# four scorers (README) and was not adopted.
PED2_SETTINGS = {
    "full": {
        "conv_ae": ({"widths": [128, 64, 32]}, DecodeConfig(clip_len=10, stride=1, resize=(64, 96)), [2], 20, 1e-3),
        "pred": ({"widths": [32, 64, 128]}, DecodeConfig(clip_len=8, stride=5, resize=(128, 192)), [8], 4, 1e-3),
        "st_ae": ({"widths": [64, 32], "lstm": [32, 16, 32]}, DecodeConfig(clip_len=10, stride=1, resize=(64, 96)), [10, "x2", "x3"], 10, 1e-3),
        "vgg_ae": ({"width_divisor": 2}, DecodeConfig(clip_len=4, stride=4, resize=(64, 96)), [8], 6, 1e-3),
    },
    "fast": {
        "conv_ae": ({"widths": [64, 32, 16]}, DecodeConfig(clip_len=10, stride=1, resize=(48, 72)), [5], 10, 2e-3),
        "pred": ({"widths": [16, 32, 64]}, DecodeConfig(clip_len=8, stride=5, resize=(48, 72)), [8], 2, 2e-3),
        "st_ae": ({"widths": [32, 16], "lstm": [16, 8, 16]}, DecodeConfig(clip_len=10, stride=1, resize=(48, 72)), [10], 8, 2e-3),
        "vgg_ae": ({"width_divisor": 4}, DecodeConfig(clip_len=4, stride=4, resize=(48, 72)), [8], 6, 2e-3),
    },
}


def training_decodes(decode: DecodeConfig, spec: list) -> list[DecodeConfig]:
    """[stride] or [stride, "x2", "x3"]: the latter adds clips sampled every 2nd / 3rd frame."""
    stride, *steps = spec
    out = [decode.model_copy(update={"stride": stride})]
    out += [decode.model_copy(update={"stride": stride, "frame_step": int(s[1:])}) for s in steps]
    return out


@dataclass
class BenchResult:
    scorer: str
    auc_micro: float
    auc_macro: float
    eer: float
    train_s: float
    clips_per_s: float
    train_clips: int
    test_clips: int
    final_loss: float
    val_pseudo_auc: float  # on held-out normal training videos with injected pseudo-anomalies
    normalisation: str = "minmax"  # per-video score scale, the scorer's paper's (`evaluation_normalisation`)


def _clips_with_starts(folder: Path, decode, keys: set[str] | None = None) -> dict[str, tuple[list[int], np.ndarray]]:
    from vad.config import SourceConfig
    from vad.decode import iter_clips
    from vad.sources import list_videos

    videos, _ = list_videos(SourceConfig(uri=str(folder)), run_date="2000-01-01")
    out = {}
    for video in videos:
        if keys is not None and video.key not in keys:
            continue
        clips = list(iter_clips(video, decode))
        out[video.key] = ([c.start_frame for c in clips], np.stack([c.frames for c in clips]))
    return out


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
    test: bool = True,
) -> BenchResult:
    """Train `name` on the Ped2 training videos (all normal; less `held_out` validation videos, whose
    pseudo-anomaly AUC is reported, `vad.validation`) and, with `test`, report the frame-level AUC on
    the test videos.

    Nothing is selected on the test set: fixed epochs, no checkpoint picking, no threshold; settings are
    compared on the validation videos (`test=False` never reads the test folder)."""
    import time

    import torch

    from vad.metrics import frame_level_report, frames_from_clips
    from vad.scorers import build_scorer, evaluation_normalisation
    from vad.training import fit, score_clips
    from vad.validation import pseudo_anomaly_report

    normalise = evaluation_normalisation(name)
    ped2 = load_ped2()
    train_keys, val_keys = split_training_videos(ped2, held_out, seed)
    train_decodes = train_decode if isinstance(train_decode, (list, tuple)) else [train_decode]
    train = np.concatenate(
        [c for d in train_decodes for _, c in _clips_with_starts(ped2.train_dir, d, train_keys).values()]
    )
    if max_train_clips and len(train) > max_train_clips:
        train = train[np.random.default_rng(seed).choice(len(train), max_train_clips, replace=False)]
    torch.manual_seed(seed)  # the initial weights too: `fit` seeds only the training that follows
    model = build_scorer(name, clip_len=decode.clip_len, **hparams)
    result = fit(model, train, epochs=epochs, batch_size=batch_size, lr=lr, val_fraction=0.05, seed=seed)
    frames = decode.model_copy(update={"clip_len": 1, "stride": 1, "frame_step": 1})
    val_videos = [clips[:, 0] for _, clips in _clips_with_starts(ped2.train_dir, frames, val_keys).values()]
    val = (
        pseudo_anomaly_report(
            model, val_videos, decode.clip_len, stride=decode.stride, batch_size=batch_size, seed=seed,
            smoothing=smoothing, normalise=normalise,
        )
        if val_videos else None
    )
    report, n_clips, score_s = {"auc_micro": float("nan"), "auc_macro": float("nan"), "eer": float("nan")}, 0, 0.0
    if test:
        labels = ped2.test_labels()
        ys, ss, t0 = [], [], time.perf_counter()
        for key, (starts, clips) in _clips_with_starts(ped2.test_dir, decode).items():
            frame_scores = score_clips(model, clips, batch_size, field="frame_scores")
            n_clips += len(frame_scores)
            rows = [(s, decode.frame_step, f) for s, f in zip(starts, frame_scores)]
            ys.append(labels[key])
            ss.append(frames_from_clips(len(labels[key]), rows, "mean"))
        score_s = time.perf_counter() - t0
        report = frame_level_report(ys, ss, normalise, smoothing)
    return BenchResult(
        name, report["auc_micro"], report["auc_macro"], report["eer"], result.seconds,
        n_clips / score_s if score_s else float("nan"), len(train), n_clips, result.history[-1]["train/loss"],
        val["auc_micro"] if val else float("nan"), normalise,
    )
