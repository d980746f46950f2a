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
from vad.ledger import ManifestKey, ManifestWriter, adopt_finished, error_row, is_up_to_date, read_manifest, start_error_log, unique_errors, write_errors
from vad.schema import SCORES_SCHEMA_VERSION, decode_signature
from vad.sinks import write_run_record
from vad.sources import Rejected, list_videos
from vad.stages import DecodeAndScoreClips, ScoreClips, WriteScores, decode_tasks, map_decoded_clips
from vad.tracking import mlflow_run

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    run_id: str
    run_date: str
    videos: int  # listed videos
    clips: int
    anomalous_clips: int
    files: list[str]
    rejected: list[Rejected] = field(default_factory=list)
    wall_s: float = 0.0
    mlflow_run_id: str | None = None
    up_to_date: int = 0  # skipped: the manifest has them, unchanged, for this model
    errors: list[dict] = field(default_factory=list)  # rows of the errors table
    attempted: int = 0  # objects this run tried (videos to score + newly rejected objects)
    max_failure_rate: float = 1.0

    @property
    def clips_per_s(self) -> float:
        return self.clips / self.wall_s if self.wall_s else 0.0

    @property
    def failure_rate(self) -> float:
        return len(self.errors) / self.attempted if self.attempted else 0.0

    @property
    def failed(self) -> bool:
        """True when too many objects failed for the job to count as a success."""
        return self.failure_rate > self.max_failure_rate


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


def build_dataset(cfg: ScoreJobConfig, listing: list[dict], run_id: str, checkpoint: str | None = None, errors=None):
    """The lazy Ray Dataset of the job; consuming it runs the job and yields one row per video written.

    `errors` is the run's `vad.ledger.ErrorLog` actor; without one, the first failure fails the job."""
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = True
    storage = cfg.storage
    tasks = decode_tasks(listing, cfg.decode)
    ds = ray.data.from_items(tasks, override_num_blocks=max(1, min(len(tasks), 1000)))
    scorer_kwargs = {
        "checkpoint": checkpoint or cfg.scorer.checkpoint,
        "storage": storage,
        "device": cfg.scorer.device,
        "run_id": run_id,
        "decode": cfg.decode,
        "errors": errors,
        "precision": cfg.scorer.precision,
        "memory_format": cfg.scorer.memory_format,
        "compile": cfg.scorer.compile,
    }
    ds = map_decoded_clips(
        ds, model_stage=ScoreClips, fused_stage=DecodeAndScoreClips, constructor_kwargs=scorer_kwargs,
        decode=cfg.decode, storage=storage, errors=errors, batch_size=cfg.scorer.batch_size,
        concurrency=cfg.scorer.concurrency, num_cpus=cfg.scorer.num_cpus, num_gpus=_num_gpus(cfg),
    )
    return ds.map_batches(
        WriteScores,
        fn_constructor_kwargs={"output_uri": cfg.output.uri, "storage": storage, "run_id": run_id, "decode": cfg.decode, "errors": errors},
        batch_size=None,
        compute=ray.data.ActorPoolStrategy(size=1),  # one writer: every clip of a video must meet there
        num_cpus=0.1,  # I/O-bound; must not take a whole CPU from decoding on small machines
    )


def run_scoring(cfg: ScoreJobConfig, run_date: str | None = None) -> RunSummary:
    """Score every new or changed video under `cfg.source.uri`; returns what was written.

    Bad objects end up in the `errors` table, not in an exception; `RunSummary.failed` says
    whether they were too many (`run.max_failure_rate`)."""
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
    signature = decode_signature(
        cfg.decode.clip_len, cfg.decode.stride, cfg.decode.frame_step, cfg.decode.resize, cfg.decode.grayscale, cfg.decode.backend
    )

    def key(uri: str) -> ManifestKey:
        return ManifestKey(uri, loaded.name, loaded.version, signature)

    manifest = read_manifest(cfg.output.uri, cfg.storage) if cfg.run.incremental else {}
    todo = [v for v in videos if not is_up_to_date(manifest.get(key(v.uri)), v.size, v.mtime)]
    adopted = adopt_finished(cfg.output.uri, todo, key, cfg.storage) if cfg.run.incremental else []
    if adopted:
        log.info("%d videos were finished by an earlier, interrupted run; not scored again", len(adopted))
        finished = {video.uri for video, _, _ in adopted}
        todo = [v for v in todo if v.uri not in finished]
    new_rejected = [r for r in rejected if not is_up_to_date(manifest.get(key(r.uri)), r.size, r.mtime)]
    for bad in new_rejected:
        log.warning("skipped %s: %s", bad.uri, bad.reason)
    log.info(
        "run %s: %d videos under %s, %d to score (%d up to date), %d other objects skipped",
        run_id, len(videos), cfg.source.uri, len(todo), len(videos) - len(todo), len(rejected),
    )
    errors = [error_row(r.uri, "list", error_class="Rejected", message=r.reason, permanent=True, size=r.size) for r in new_rejected]

    with mlflow_run(cfg.mlflow, cfg.work_dir, cfg.run_name or f"score-{run_date}", {"vad.run_id": run_id, "vad.job": "score"}) as mlflow:
        if mlflow is not None:
            mlflow.log_params(_params(cfg, loaded, run_date))
        manifest_out = ManifestWriter(cfg.output.uri, run_date, run_id, cfg.storage, flush_s=cfg.run.manifest_flush_s)
        for video, path, rows in adopted:
            manifest_out.add(uri=video.uri, size=video.size, mtime=video.mtime, key=key(video.uri), status="scored", clips=rows, scores_path=path)
        files, clips, anomalies = [], 0, 0
        if todo:
            ensure_ray(cfg)
            written, stage_errors = _score_videos(cfg, todo, run_id, checkpoint, manifest_out, key)
            for row in written:
                files.append(row["path"])
                clips += int(row["rows"])
                anomalies += int(row["anomalies"])
            errors += stage_errors
        by_uri = {v.uri: v for v in videos} | {r.uri: r for r in rejected}
        for row in errors:
            if row["permanent"]:  # not tried again until the object changes
                bad = by_uri[row["uri"]]
                manifest_out.add(uri=bad.uri, size=bad.size, mtime=bad.mtime, key=key(bad.uri), status="failed", clips=0, scores_path=None)
        manifest_out.flush()
        write_errors(cfg.output.uri, run_date, run_id, errors, cfg.storage)
        summary = RunSummary(
            run_id, run_date, len(videos), clips, anomalies, files, rejected, time.perf_counter() - t0,
            up_to_date=len(videos) - len(todo), errors=errors, attempted=len(todo) + len(new_rejected),
            max_failure_rate=cfg.run.max_failure_rate,
        )
        record = {
            "schema_version": SCORES_SCHEMA_VERSION,
            "run_id": run_id,
            "run_date": dt.date.fromisoformat(run_date),
            "started_at": started_at,
            "finished_at": dt.datetime.now(dt.timezone.utc),
            "source_uri": cfg.source.uri,
            "model_name": loaded.name,
            "model_version": loaded.version,
            "videos": summary.videos,
            "rejected": len(rejected),
            "up_to_date": summary.up_to_date,
            "errors": len(errors),
            "failure_rate": summary.failure_rate,
            "clips": clips,
            "anomalous_clips": anomalies,
            "wall_s": summary.wall_s,
            "clips_per_s": summary.clips_per_s,
        }
        write_run_record(cfg.output.uri, record, cfg.storage)
        if mlflow is not None:
            metrics = {
                "score/videos": summary.videos,
                "score/up_to_date": summary.up_to_date,
                "score/rejected": len(rejected),
                "score/errors": len(errors),
                "score/failure_rate": summary.failure_rate,
                "score/clips": clips,
                "score/anomalous_clips": anomalies,
                "score/files": len(files),
                "score/wall_s": summary.wall_s,
                "score/clips_per_s": summary.clips_per_s,
            }
            for stage in sorted({row["stage"] for row in errors}):
                metrics[f"score/errors_{stage}"] = sum(row["stage"] == stage for row in errors)
            mlflow.log_metrics(metrics)
            summary.mlflow_run_id = mlflow.active_run().info.run_id
    log.info(
        "run %s: %d clips from %d videos in %.1f s, %d anomalous, %d errors (%.1f%% of %d objects tried)",
        run_id, clips, len(todo), summary.wall_s, anomalies, len(errors), 100 * summary.failure_rate, summary.attempted,
    )
    return summary


def _score_videos(cfg: ScoreJobConfig, todo: list, run_id: str, checkpoint: str, manifest_out: ManifestWriter, key):
    """Run the Ray pipeline over `todo`, again over videos a lost worker left incomplete;
    returns (rows written, error rows)."""
    import ray

    error_log = start_error_log()
    try:
        by_uri = {v.uri: v for v in todo}
        written: list[dict] = []
        done: set[str] = set()
        remaining = todo
        for attempt in range(cfg.run.retry_passes + 1):
            for row in build_dataset(cfg, [v.to_row() for v in remaining], run_id, checkpoint, error_log).iter_rows():
                video = by_uri[row["video_uri"]]
                if video.uri not in done:
                    done.add(video.uri)
                    written.append(row)
                manifest_out.add(
                    uri=video.uri, size=video.size, mtime=video.mtime, key=key(video.uri),
                    status="scored", clips=int(row["rows"]), scores_path=row["path"],
                )
            failed = {row["uri"] for row in ray.get(error_log.rows.remote())}
            remaining = [v for v in remaining if v.uri not in done and v.uri not in failed]
            if not remaining:
                break
            if attempt < cfg.run.retry_passes:
                log.warning("%d videos incomplete after pass %d (lost workers?); scoring them again", len(remaining), attempt + 1)
        errors = [row for row in unique_errors(ray.get(error_log.rows.remote())) if row["uri"] not in done]
        errors += [
            error_row(v.uri, "incomplete", error_class="Incomplete", message="not all clips were written; tried again next run", size=v.size)
            for v in remaining
        ]
        return written, errors
    finally:
        ray.kill(error_log)


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
        "decode.backend": cfg.decode.backend,
        "decode.split_mb": cfg.decode.split_mb if cfg.decode.split_mb is not None else "off",
        "scorer.name": loaded.name,
        "scorer.version": loaded.version,
        "scorer.checkpoint": cfg.scorer.checkpoint,
        "scorer.threshold": loaded.threshold,
        "scorer.batch_size": cfg.scorer.batch_size,
        "scorer.concurrency": cfg.scorer.concurrency,
        "scorer.precision": cfg.scorer.precision,
        "scorer.memory_format": cfg.scorer.memory_format,
        "scorer.compile": cfg.scorer.compile,
    }
