"""A fleet: one model of normal per camera, trained many at once across the cluster.

Each camera's videos (camera from `source.key_pattern`) are split into training and held-out videos
and handed to one Ray task, which decodes its clips once, fits the model in that process (the same
`fit` and `train_step` as everywhere else) and returns the weights with their validation loss and
threshold. The cluster runs as many camera tasks at once as it has room for
(`distributed.cpus_per_worker` each, `gpus_per_worker` with `use_gpu`). A camera's model is small:
one process per camera uses the cluster better than a DDP group per camera, and a lost task is simply
run again.

The driver takes results as they come: each camera gets a nested MLflow run (tag `vad.camera`), its
own registered model (`vad-conv-ae.cam01`, see `vad.tracking.registry.registry_name`) whose alias
moves only to a better model, and its checkpoint at `output.checkpoint` with `{camera}` filled in.
Progress is kept in `<work_dir>/fleet/<run>.json`: a run that is killed and started again with the
same settings trains only the cameras it had not finished. What vad warns of inside a camera's task comes
back with its row (`warnings`) and is logged again by the driver.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vad.config import TrainJobConfig
from vad.training.result import Trained

log = logging.getLogger(__name__)

SUMMARY_COLUMNS = ("camera", "status", "videos", "clips", "val_clips", "val_loss", "threshold", "model", "promoted", "seconds", "note")


@dataclass
class FleetSummary:
    rows: list[dict]  # one per camera, SUMMARY_COLUMNS plus the checkpoint
    resumed: list[str] = field(default_factory=list)  # cameras finished by an earlier, interrupted run
    mlflow_run_id: str | None = None
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(row["status"] == status for row in self.rows)

    def table(self) -> str:
        """The summary as an aligned text table (the CLI prints it, MLflow keeps it)."""
        from vad.results.sql import format_table

        shown = [[_cell(row.get(c)) for c in SUMMARY_COLUMNS] for row in self.rows]
        return format_table(list(SUMMARY_COLUMNS), shown)


def _cell(value):
    return f"{value:.5g}" if isinstance(value, float) else ("" if value is None else value)


def train_camera(camera: str, train_videos: list, val_videos: list, cfg: TrainJobConfig, hparams: dict, threads: int) -> tuple[dict, Trained | None]:
    """One camera's model (runs as a Ray task): decode its clips once, learn (`vad.training.local.fit`, by the
    model's kind), return its summary row and what it learned, packed (None when skipped). The row's `warnings`
    are what vad warned of meanwhile (a budget on little footage, a threshold raised by feedback): the task's
    log stays on its worker, the driver says them again."""
    from vad.console import kept_warnings

    with kept_warnings() as warned:
        row, trained = _learn_camera(camera, train_videos, val_videos, cfg, hparams, threads)
    return {**row, "warnings": warned}, trained


def _learn_camera(camera: str, train_videos: list, val_videos: list, cfg: TrainJobConfig, hparams: dict, threads: int) -> tuple[dict, Trained | None]:
    import torch

    from vad.models.inference import pick_device
    from vad.training.data import decode_clips
    from vad.training.local import fit

    torch.set_num_threads(max(1, threads))
    started = time.perf_counter()
    spans: dict = {}  # the dismissed events' clips, decoded once for training and again for the feedback floor
    clips = decode_clips(train_videos, cfg, cfg.train.max_clips, spans=spans)
    row = {"camera": camera, "videos": len(train_videos) + len(val_videos), "clips": len(clips), "val_clips": 0}
    if len(clips) < cfg.train.min_camera_clips:
        note = f"{len(clips)} training clips, fewer than train.min_camera_clips {cfg.train.min_camera_clips}: add footage or lower it"
        return {**row, "status": "skipped", "note": note, "seconds": time.perf_counter() - started}, None
    held_out: dict = {}
    val = decode_clips(val_videos, cfg, meta=held_out) if val_videos else None
    model = _camera_model(camera, cfg, hparams)
    loop = cfg.train
    trained = fit(
        model, clips, epochs=loop.epochs, batch_size=loop.batch_size, lr=loop.lr, weight_decay=loop.weight_decay,
        val_fraction=0.0, threshold_quantile=loop.threshold_quantile, seed=loop.seed, device=pick_device("cuda" if cfg.distributed.use_gpu else "cpu"),
        val_clips=val if val is not None and len(val) else None, alerts=cfg.alerts, val_meta=held_out or None, what=f"camera {camera}",
    )
    model.to("cpu")
    _apply_feedback_floor(trained, [v for v in train_videos if v.first_frame is not None], cfg, spans, camera)
    trained.pack(cfg, camera)
    trained.model = None  # the checkpoint travels back, not the module
    final = trained.history[-1]
    return {
        **row, "status": "trained", "val_clips": trained.val_clips if val is not None else 0, "val_loss": final["val/loss"],
        "threshold": trained.threshold, "seconds": time.perf_counter() - started,
        "note": "" if val_videos else "no held-out video: not promoted",
    }, trained


def _camera_model(camera: str, cfg: TrainJobConfig, hparams: dict):
    """The camera's model before learning: new, or fine-tuned from `train.init_from` (a trained scorer's refit with feedback)."""
    from vad.models.checkpoint import load_checkpoint
    from vad.models.registry import LearningType
    from vad.models.scorers import build_scorer

    model = build_scorer(cfg.model.name, **hparams)
    if cfg.train.init_from and model.meta.learning_type is LearningType.TRAINED:
        start = load_checkpoint(cfg.train.init_from.replace("{camera}", camera), cfg.storage)
        if start.name != cfg.model.name:
            raise ValueError(f"train.init_from for camera {camera} holds a {start.name!r} model, not {cfg.model.name!r}")
        model.load_state_dict(start.model.state_dict())
    model.bind_storage(cfg.storage)  # what it reads besides clips (a detector's weights)
    return model


def _apply_feedback_floor(trained: Trained, spans_trained: list, cfg: TrainJobConfig, spans: dict, camera: str) -> None:
    """With footage operators dismissed, the camera's threshold stays above the refitted model's scores of it."""
    from vad.training.alerts import feedback_floor
    from vad.training.data import decode_clips
    from vad.training.local import score_clips

    dismissed = list(dict.fromkeys(spans_trained))  # each event's span is listed feedback_repeat times
    if dismissed:
        dismissed_clips = decode_clips(dismissed, cfg, spans=spans)
        scores = score_clips(trained.model, dismissed_clips, cfg.train.batch_size)
        trained.threshold, trained.feedback_floor = feedback_floor(trained.threshold, scores, f"camera {camera}")


class FleetState:
    """Which cameras a fleet run has finished, in a small JSON file rewritten after each camera."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: dict[str, dict] = {}
        if path.is_file():
            saved = json.loads(path.read_text())
            if not saved.get("finished"):
                self.rows = saved.get("cameras", {})

    @classmethod
    def for_config(cls, cfg: TrainJobConfig) -> "FleetState":
        identity = json.dumps([cfg.model.model_dump(), cfg.source.uri, cfg.train.key_regex, cfg.output.checkpoint, cfg.decode.model_dump()])
        name = cfg.run_name or f"fleet-{cfg.model.name}-{hashlib.sha1(identity.encode()).hexdigest()[:12]}"
        return cls(Path(cfg.work_dir).expanduser().resolve() / "fleet" / f"{name}.json")

    def record(self, row: dict) -> None:
        self.rows[row["camera"]] = row
        self._save(finished=False)

    def finish(self) -> None:
        self._save(finished=True)

    def _save(self, finished: bool) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_suffix(".tmp")
        temp.write_text(json.dumps({"finished": finished, "cameras": self.rows}, indent=1, default=str))
        temp.replace(self.path)


def by_camera(videos: list) -> dict[str, list]:
    groups: dict[str, list] = defaultdict(list)
    for video in videos:
        groups[video.camera].append(video)
    return dict(sorted(groups.items()))


def run_fleet_training(cfg: TrainJobConfig, *, on_camera: Callable[[dict], None] | None = None, verbose: bool = False) -> FleetSummary:
    """Train one model per camera under `cfg.source.uri` (see the module doc); `on_camera` is called
    with each finished camera's summary row (the tests use it to stop a run part-way)."""
    from vad.cluster import ensure_ray
    from vad.io.storage import require_credentials
    from vad.models.scorers import build_scorer
    from vad.tracking.runs import mlflow_run
    from vad.training.feedback import feedback_footage
    from vad.training.job import model_hparams, run_params, training_videos

    t0 = time.perf_counter()
    hparams = model_hparams(cfg)
    build_scorer(cfg.model.name, **hparams).bind_storage(cfg.storage)  # bad names, hparams or weights fail before any cluster work
    require_credentials(cfg.output.checkpoint, cfg.storage)
    cameras = by_camera(training_videos(cfg))
    marked_normal = by_camera([s for s in feedback_footage(cfg) if s.camera in cameras])  # events operators marked normal
    state = FleetState.for_config(cfg)
    resumed = [c for c, row in state.rows.items() if c in cameras and row["status"] in ("trained", "skipped")]
    if resumed:
        log.warning("resuming fleet run %s: %d of %d cameras already finished", state.path.stem, len(resumed), len(cameras))
    ensure_ray(cfg.ray.address, cfg.ray.num_cpus, dashboard=True, verbose=verbose)
    rows = {c: state.rows[c] for c in resumed}
    tags = {"vad.job": "train", "vad.fleet": "true"}
    with mlflow_run(cfg.mlflow, cfg.work_dir, cfg.run_name or f"train-{cfg.model.name}-fleet", tags) as tracker:
        tracker.log_params({**run_params(cfg, hparams, sum(len(v) for v in cameras.values())), "fleet.cameras": len(cameras),
                            "feedback.normal_events": sum(len(v) for v in marked_normal.values())})
        pending = _start_cameras(cfg, hparams, {c: v for c, v in cameras.items() if c not in rows}, marked_normal)
        _gather_cameras(pending, rows, cameras, cfg, tracker, state, on_camera)
        summary = FleetSummary([rows[c] for c in cameras], resumed, tracker.run_id, time.perf_counter() - t0)
        tracker.log_text(summary.table() + "\n", "fleet_summary.txt")
        tracker.log_text(json.dumps(summary.rows, indent=1, default=str), "fleet_summary.json")
        tracker.log_metrics({f"fleet/{s}": summary.count(s) for s in ("trained", "skipped", "failed")} | {"fleet/seconds": summary.seconds})
    if summary.count("failed") == 0:
        state.finish()
    return summary


def _start_cameras(cfg: TrainJobConfig, hparams: dict, cameras: dict[str, list], marked_normal: dict[str, list]) -> dict:
    """One Ray task per camera (`distributed.cpus_per_worker` CPUs, `gpus_per_worker` GPUs with `use_gpu`); {task: camera}."""
    import ray

    from vad.training.split import split_videos, split_warning

    dist = cfg.distributed
    task = ray.remote(train_camera).options(
        num_cpus=dist.cpus_per_worker, num_gpus=dist.gpus_per_worker if dist.use_gpu else 0, max_retries=max(dist.max_failures, 0),
        num_returns=2,
    )
    pending = {}
    for camera, videos in cameras.items():
        train_videos, val_videos = split_videos(videos, cfg.train.val_fraction)
        if warning := split_warning(f"camera {camera}", train_videos, val_videos, cfg.train.val_fraction):
            log.warning(warning)
        train_videos = train_videos + marked_normal.get(camera, [])  # trained on, never held out
        row_ref, trained_ref = task.remote(camera, train_videos, val_videos, cfg, hparams, max(1, int(dist.cpus_per_worker)))
        pending[row_ref] = (camera, trained_ref)
    return pending


def _gather_cameras(pending: dict, rows: dict, cameras: dict, cfg: TrainJobConfig, tracker, state: FleetState, on_camera) -> None:
    """Each camera's result as it comes: tracked, registered, written, recorded in `rows` and the run's state."""
    import ray

    from vad.console import Progress

    progress = Progress("training", len(cameras), "cameras")
    try:
        while pending:
            progress.update(len(rows), f"{len(pending)} in training")
            ready, _ = ray.wait(list(pending), num_returns=1)
            camera, trained_ref = pending.pop(ready[0])
            try:
                row = _finish_camera(ray.get(ready[0]), ray.get(trained_ref), cfg, tracker)
            except Exception as exc:  # this camera failed (after Ray's retries); the others go on
                log.warning("camera %s failed: %s", camera, exc)
                row = {"camera": camera, "status": "failed", "videos": len(cameras[camera]), "note": str(exc).strip().splitlines()[0][:200]}
            rows[camera] = row
            state.record(row)
            if on_camera is not None:
                on_camera(row)
    finally:
        progress.close()
        for ref in pending:
            ray.cancel(ref, force=True)


def _finish_camera(row: dict, trained: Trained | None, cfg: TrainJobConfig, tracker) -> dict:
    """A camera task's result tracked, registered and written; returns its summary row."""
    from vad.training.job import register_and_write

    camera = row["camera"]
    for message in row.get("warnings", []):  # logged in the camera's task, on its worker: said again here
        log.warning("%s", message if camera in message else f"camera {camera}: {message}")
    if trained is None:
        log.warning("camera %s skipped: %s", camera, row["note"])
        return row
    with tracker.child(camera, {"vad.camera": camera, "vad.job": "train"}) as child:
        for epoch_row in trained.history:
            child.log_metrics({k: v for k, v in epoch_row.items() if k != "epoch" and not np.isnan(v)}, step=int(epoch_row["epoch"]))
        child.log_metrics(trained.logged_metrics())
        registered, checkpoint = register_and_write(child, cfg, trained, camera)
    row = {**row, "checkpoint": checkpoint, "model": f"{registered.name}/{registered.version}" if registered else "",
           "promoted": bool(registered and registered.promoted)}
    if registered is not None and not registered.promoted and not row["note"]:
        row["note"] = registered.reason
    return row
