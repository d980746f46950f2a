"""The nightly scoring job: list -> decode (Ray tasks) -> score (Ray actors) -> write Parquet.

Run metrics go to a `runs` Parquet table and to MLflow.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from dataclasses import dataclass, field

from vad.config import ScoreJobConfig
from vad.sinks import write_run_record
from vad.sources import Rejected, list_videos
from vad.stages import ScoreClips, WriteScores, decode_videos
from vad.tracking import mlflow_run

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    run_id: str
    run_date: str
    videos: int
    clips: int
    anomalous_clips: int
    files: list[str]
    rejected: list[Rejected] = field(default_factory=list)
    wall_s: float = 0.0
    mlflow_run_id: str | None = None

    @property
    def clips_per_s(self) -> float:
        return self.clips / self.wall_s if self.wall_s else 0.0


def ensure_ray(cfg: ScoreJobConfig) -> None:
    import ray

    if ray.is_initialized():
        return
    kwargs: dict = {"include_dashboard": False, "log_to_driver": True}
    if cfg.ray.address:
        kwargs["address"] = cfg.ray.address
    elif cfg.ray.num_cpus:
        kwargs["num_cpus"] = cfg.ray.num_cpus
    ray.init(**kwargs)


def _num_gpus(cfg: ScoreJobConfig) -> float:
    import ray

    if cfg.scorer.num_gpus is not None:
        return cfg.scorer.num_gpus
    if cfg.scorer.device == "cpu":
        return 0.0
    return 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0


def build_dataset(cfg: ScoreJobConfig, listing: list[dict], run_id: str, checkpoint: str | None = None):
    """The lazy Ray Dataset of the job; consuming it runs the job and yields one row per file written."""
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = True
    storage = cfg.storage
    ds = ray.data.from_items(listing, override_num_blocks=max(1, min(len(listing), 1000)))
    # On GPU clusters the decode tasks stay separate from the GPU actors (their resources differ),
    # so decoding scales with CPUs; on CPU-only clusters Ray fuses decoding into the scoring
    # actors, which saves shipping frames between processes.
    ds = ds.map_batches(
        decode_videos,
        batch_size=1,
        fn_kwargs={"decode": cfg.decode, "storage": storage},
        num_cpus=cfg.decode.num_cpus,
    )
    ds = ds.map_batches(
        ScoreClips,
        fn_constructor_kwargs={
            "checkpoint": checkpoint or cfg.scorer.checkpoint,
            "storage": storage,
            "device": cfg.scorer.device,
            "run_id": run_id,
            "decode": cfg.decode,
        },
        batch_size=cfg.scorer.batch_size,
        compute=ray.data.ActorPoolStrategy(size=cfg.scorer.concurrency),
        num_cpus=cfg.scorer.num_cpus,
        num_gpus=_num_gpus(cfg),
    )
    return ds.map_batches(
        WriteScores,
        fn_constructor_kwargs={"output_uri": cfg.output.uri, "storage": storage, "run_id": run_id},
        batch_size=cfg.output.rows_per_file,
        compute=ray.data.ActorPoolStrategy(size=1),
        num_cpus=0.1,  # I/O-bound; must not take a whole CPU from decoding on small machines
    )


def run_scoring(cfg: ScoreJobConfig, run_date: str | None = None) -> RunSummary:
    """Score every video under `cfg.source.uri`; returns what was written."""
    from vad.checkpoint import check_decode_matches, load_checkpoint
    from vad.registry import resolve_model_uri
    from vad.tracking import tracking_uri

    started_at = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()
    run_date = run_date or started_at.date().isoformat()
    run_id = uuid.uuid4().hex[:16]
    # Fail fast on the driver, before any cluster work: a bad checkpoint or decode mismatch.
    checkpoint = resolve_model_uri(cfg.scorer.checkpoint, tracking_uri(cfg.mlflow, cfg.work_dir), cfg.work_dir)
    loaded = load_checkpoint(checkpoint, cfg.storage)
    check_decode_matches(loaded, cfg.decode)
    videos, rejected = list_videos(cfg.source, cfg.storage, run_date)
    for bad in rejected:
        log.warning("skipped %s: %s", bad.uri, bad.reason)
    log.info("run %s: %d videos to score under %s (%d skipped)", run_id, len(videos), cfg.source.uri, len(rejected))

    with mlflow_run(cfg.mlflow, cfg.work_dir, cfg.run_name or f"score-{run_date}", {"vad.run_id": run_id, "vad.job": "score"}) as mlflow:
        if mlflow is not None:
            mlflow.log_params(_params(cfg, loaded, run_date))
        files, clips, anomalies = [], 0, 0
        if videos:
            ensure_ray(cfg)
            for row in build_dataset(cfg, [v.to_row() for v in videos], run_id, checkpoint).iter_rows():
                files.append(row["path"])
                clips += int(row["rows"])
                anomalies += int(row["anomalies"])
        summary = RunSummary(run_id, run_date, len(videos), clips, anomalies, files, rejected, time.perf_counter() - t0)
        record = {
            "schema_version": 1,
            "run_id": run_id,
            "run_date": dt.date.fromisoformat(run_date),
            "started_at": started_at,
            "finished_at": dt.datetime.now(dt.timezone.utc),
            "source_uri": cfg.source.uri,
            "model_name": loaded.name,
            "model_version": loaded.version,
            "videos": summary.videos,
            "rejected": len(rejected),
            "clips": clips,
            "anomalous_clips": anomalies,
            "wall_s": summary.wall_s,
            "clips_per_s": summary.clips_per_s,
        }
        write_run_record(cfg.output.uri, record, cfg.storage)
        if mlflow is not None:
            mlflow.log_metrics(
                {
                    "score/videos": summary.videos,
                    "score/rejected": len(rejected),
                    "score/clips": clips,
                    "score/anomalous_clips": anomalies,
                    "score/files": len(files),
                    "score/wall_s": summary.wall_s,
                    "score/clips_per_s": summary.clips_per_s,
                }
            )
            summary.mlflow_run_id = mlflow.active_run().info.run_id
    log.info("run %s: %d clips from %d videos in %.1f s, %d anomalous", run_id, clips, len(videos), summary.wall_s, anomalies)
    return summary


def _params(cfg: ScoreJobConfig, loaded, run_date: str) -> dict:
    """Run parameters for MLflow; storage credentials are never included."""
    return {
        "run_date": run_date,
        "source.uri": cfg.source.uri,
        "output.uri": cfg.output.uri,
        "storage.endpoint_url": cfg.storage.endpoint_url or "",
        "decode.clip_len": cfg.decode.clip_len,
        "decode.stride": cfg.decode.stride,
        "decode.frame_step": cfg.decode.frame_step,
        "decode.resize": "x".join(map(str, cfg.decode.resize)) if cfg.decode.resize else "native",
        "decode.grayscale": cfg.decode.grayscale,
        "scorer.name": loaded.name,
        "scorer.version": loaded.version,
        "scorer.checkpoint": cfg.scorer.checkpoint,
        "scorer.threshold": loaded.threshold,
        "scorer.batch_size": cfg.scorer.batch_size,
        "scorer.concurrency": cfg.scorer.concurrency,
    }
