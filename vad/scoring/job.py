"""The nightly scoring job, in three steps:

- `plan_run`: on the driver, before any cluster work: resolve and load the model (a bad checkpoint or
  a decode mismatch fails here), list the source, and decide what to score from the manifest;
- `execute`: the Ray pipeline (`build_dataset`: decode tasks -> scoring actors -> writer), again over
  videos a lost worker left incomplete, the manifest and errors written as results arrive;
- `report`: one `RunSummary` whose projection (`RunSummary.figures`) becomes the `runs` row, the MLflow
  metrics and the CLI's JSON.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from dataclasses import dataclass, field

from vad.cluster import ensure_ray
from vad.config import ScoreJobConfig
from vad.console import Progress, verbose
from vad.io.sources import Rejected, VideoRef, scan_source
from vad.io.storage import require_credentials
from vad.results.ledger import (
    ManifestKey,
    ManifestWriter,
    adopt_finished,
    error_row,
    is_up_to_date,
    read_manifest,
    start_error_log,
    unique_errors,
    write_errors,
)
from vad.results.runs import write_run_record
from vad.results.schema import RUNS_SCHEMA, SCORES_SCHEMA_VERSION, signature_of
from vad.scoring.stages import DecodeAndScoreClips, ScoreClips, decode_tasks, map_decoded_clips
from vad.scoring.writer import WriteScores
from vad.tracking.runs import mlflow_run

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """What a run will do, decided before any cluster work."""

    run_id: str
    run_date: str
    started_at: dt.datetime
    checkpoint: str  # resolved path or uri (a `models:/` uri becomes its checkpoint's location)
    model_name: str
    model_version: str
    threshold: float
    decode: str  # decode signature
    videos: list[VideoRef]  # everything listed
    rejected: list[Rejected]  # objects that claim to be video but cannot be taken (errors)
    skipped: list[Rejected]  # objects that are not video (sidecars): counted, never failures
    todo: list[VideoRef]  # to score
    adopted: list[tuple]  # (video, path, clips) finished by an interrupted earlier run
    new_rejected: list[Rejected]  # rejected objects not yet in the manifest as failed

    def key(self, uri: str) -> ManifestKey:
        return ManifestKey(uri, self.model_name, self.model_version, self.decode)


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
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    source_uri: str = ""
    model_name: str = ""
    model_version: str = ""
    skipped: int = 0  # objects that are not video (labels, checksums, thumbnails): never failures

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

    def figures(self) -> dict:
        """The run in numbers: the one projection the runs row, MLflow and the CLI all show."""
        return {
            "videos": self.videos,
            "up_to_date": self.up_to_date,
            "rejected": len(self.rejected),
            "skipped": self.skipped,
            "errors": len(self.errors),
            "failure_rate": self.failure_rate,
            "clips": self.clips,
            "anomalous_clips": self.anomalous_clips,
            "files": len(self.files),
            "wall_s": self.wall_s,
            "clips_per_s": self.clips_per_s,
        }

    def errors_by_stage(self) -> dict[str, int]:
        stages = sorted({row["stage"] for row in self.errors})
        return {stage: sum(row["stage"] == stage for row in self.errors) for stage in stages}

    def runs_row(self) -> dict:
        """The row of the `runs` table (its columns: identity, then the figures it keeps)."""
        row = {
            "schema_version": SCORES_SCHEMA_VERSION, "run_id": self.run_id, "run_date": dt.date.fromisoformat(self.run_date),
            "started_at": self.started_at, "finished_at": self.finished_at, "source_uri": self.source_uri,
            "model_name": self.model_name, "model_version": self.model_version, **self.figures(),
        }
        return {name: row[name] for name in RUNS_SCHEMA.names}

    def metrics(self) -> dict:
        """MLflow metrics: `score/<figure>` and `score/errors_<stage>`."""
        return {**{f"score/{k}": v for k, v in self.figures().items()}, **{f"score/errors_{k}": v for k, v in self.errors_by_stage().items()}}

    def cli(self) -> dict:
        """What `vad score` prints."""
        return {"run_id": self.run_id, "run_date": self.run_date, **self.figures(), "mlflow_run_id": self.mlflow_run_id}


def _num_gpus(cfg: ScoreJobConfig) -> float:
    import ray

    if cfg.scorer.num_gpus is not None:
        return cfg.scorer.num_gpus
    if cfg.scorer.device == "cpu":
        return 0.0
    return 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0


def build_dataset(cfg: ScoreJobConfig, listing: list[dict], run_id: str, checkpoint: str | None = None, errors=None):
    """The lazy Ray Dataset of the job; consuming it runs the job and yields one row per video written.

    `errors` is the run's `vad.results.ledger.ErrorLog` actor; without one, the first failure fails the job."""
    import ray

    storage = cfg.storage
    tasks = decode_tasks(listing, cfg.decode)
    ds = ray.data.from_items(tasks, override_num_blocks=max(1, min(len(tasks), 1000)))
    ds.context.enable_progress_bars = verbose()  # the job draws its own; Ray Data's per operator with -v
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


def plan_run(cfg: ScoreJobConfig, run_date: str | None = None) -> Plan:
    """Load the model, list the source and choose what to score; fails fast, before any cluster work."""
    from vad.models.checkpoint import check_decode_matches, load_checkpoint
    from vad.tracking.registry import resolve_model_uri
    from vad.tracking.runs import tracking_uri

    started_at = dt.datetime.now(dt.timezone.utc)
    run_date = run_date or started_at.date().isoformat()
    require_credentials(cfg.output.uri, cfg.storage)
    checkpoint = resolve_model_uri(cfg.scorer.checkpoint, tracking_uri(cfg.mlflow, cfg.work_dir), cfg.work_dir)
    loaded = load_checkpoint(checkpoint, cfg.storage)
    if cfg.scorer.name is not None and cfg.scorer.name != loaded.name:
        raise ValueError(f"scorer.name is {cfg.scorer.name!r} but checkpoint {cfg.scorer.checkpoint} holds a {loaded.name!r} model")
    check_decode_matches(loaded, cfg.decode)
    listing = scan_source(cfg.source, cfg.storage, run_date)
    videos, rejected = listing.videos, listing.rejected
    plan = Plan(
        uuid.uuid4().hex[:16], run_date, started_at, checkpoint, loaded.name, loaded.version, loaded.threshold,
        signature_of(cfg.decode), videos, rejected, listing.skipped, [], [], [],
    )
    manifest = read_manifest(cfg.output.uri, cfg.storage) if cfg.run.incremental else {}
    plan.todo = [v for v in videos if not is_up_to_date(manifest.get(plan.key(v.uri)), v.size, v.mtime)]
    plan.adopted = adopt_finished(cfg.output.uri, plan.todo, plan.key, cfg.storage) if cfg.run.incremental else []
    if plan.adopted:
        log.info("%d videos were finished by an earlier, interrupted run; not scored again", len(plan.adopted))
        finished = {video.uri for video, _, _ in plan.adopted}
        plan.todo = [v for v in plan.todo if v.uri not in finished]
    plan.new_rejected = [r for r in rejected if not is_up_to_date(manifest.get(plan.key(r.uri)), r.size, r.mtime)]
    for bad in plan.new_rejected:
        log.warning("skipped %s: %s", bad.uri, bad.reason)
    log.info(
        "run %s: %d videos under %s, %d to score (%d up to date), %d video objects rejected, %d non-video objects skipped",
        plan.run_id, len(videos), cfg.source.uri, len(plan.todo), len(videos) - len(plan.todo), len(rejected), len(plan.skipped),
    )
    return plan


def execute(cfg: ScoreJobConfig, plan: Plan, t0: float) -> RunSummary:
    """Score `plan.todo` on Ray and write results, manifest and errors; returns the run's summary."""
    errors = [error_row(r.uri, "list", error_class="Rejected", message=r.reason, permanent=True, size=r.size) for r in plan.new_rejected]
    manifest_out = ManifestWriter(cfg.output.uri, plan.run_date, plan.run_id, cfg.storage, flush_s=cfg.run.manifest_flush_s)
    for video, path, rows in plan.adopted:
        manifest_out.add(uri=video.uri, size=video.size, mtime=video.mtime, key=plan.key(video.uri), status="scored", clips=rows, scores_path=path)
    files, clips, anomalies = [], 0, 0
    if plan.todo:
        ensure_ray(cfg.ray.address, cfg.ray.num_cpus)
        written, stage_errors = _score_videos(cfg, plan, manifest_out)
        for row in written:
            files.append(row["path"])
            clips += int(row["rows"])
            anomalies += int(row["anomalies"])
        errors += stage_errors
    by_uri = {v.uri: v for v in plan.videos} | {r.uri: r for r in plan.rejected}
    for row in errors:
        if row["permanent"]:  # not tried again until the object changes
            bad = by_uri[row["uri"]]
            manifest_out.add(uri=bad.uri, size=bad.size, mtime=bad.mtime, key=plan.key(bad.uri), status="failed", clips=0, scores_path=None)
    manifest_out.flush()
    write_errors(cfg.output.uri, plan.run_date, plan.run_id, errors, cfg.storage)
    return RunSummary(
        plan.run_id, plan.run_date, len(plan.videos), clips, anomalies, files, plan.rejected, time.perf_counter() - t0,
        up_to_date=len(plan.videos) - len(plan.todo), errors=errors, attempted=len(plan.todo) + len(plan.new_rejected),
        max_failure_rate=cfg.run.max_failure_rate, started_at=plan.started_at, finished_at=dt.datetime.now(dt.timezone.utc),
        source_uri=cfg.source.uri, model_name=plan.model_name, model_version=plan.model_version, skipped=len(plan.skipped),
    )


def report(cfg: ScoreJobConfig, summary: RunSummary, tracker) -> None:
    """The summary into the `runs` table, MLflow and the log."""
    write_run_record(cfg.output.uri, summary.runs_row(), cfg.storage)
    tracker.log_metrics(summary.metrics())
    summary.mlflow_run_id = tracker.run_id
    log.info(
        "run %s: %d clips in %.1f s, %d anomalous, %d errors (%.1f%% of %d objects tried)",
        summary.run_id, summary.clips, summary.wall_s, summary.anomalous_clips, len(summary.errors),
        100 * summary.failure_rate, summary.attempted,
    )


def run_scoring(cfg: ScoreJobConfig, run_date: str | None = None) -> RunSummary:
    """Score every new or changed video under `cfg.source.uri`; returns what was written.

    Bad objects end up in the `errors` table, not in an exception; `RunSummary.failed` says
    whether they were too many (`run.max_failure_rate`)."""
    t0 = time.perf_counter()
    plan = plan_run(cfg, run_date)
    with mlflow_run(cfg.mlflow, cfg.work_dir, cfg.run_name or f"score-{plan.run_date}", {"vad.run_id": plan.run_id, "vad.job": "score"}) as tracker:
        tracker.log_params(_params(cfg, plan))
        summary = execute(cfg, plan, t0)
        report(cfg, summary, tracker)
    return summary


def _lost_workers() -> tuple[type[BaseException], ...]:
    import ray.exceptions as errors

    return errors.RayActorError, errors.NodeDiedError, errors.ObjectLostError, errors.WorkerCrashedError


def _score_videos(cfg: ScoreJobConfig, plan: Plan, manifest_out: ManifestWriter):
    """Run the Ray pipeline over `plan.todo`, again over videos a lost worker left incomplete;
    returns (rows written, error rows)."""
    import ray

    error_log = start_error_log()
    progress = Progress("scoring", len(plan.todo), "videos")
    clips = 0
    try:
        by_uri = {v.uri: v for v in plan.todo}
        written: list[dict] = []
        done: set[str] = set()
        remaining = plan.todo
        for attempt in range(cfg.run.retry_passes + 1):
            try:
                for row in build_dataset(cfg, [v.to_row() for v in remaining], plan.run_id, plan.checkpoint, error_log).iter_rows():
                    video = by_uri[row["video_uri"]]
                    if video.uri not in done:
                        done.add(video.uri)
                        written.append(row)
                        clips += int(row["rows"])
                        progress.update(len(done), f"{clips} clips ({clips / max(progress.elapsed(), 1e-9):.1f} clips/s)")
                    manifest_out.add(
                        uri=video.uri, size=video.size, mtime=video.mtime, key=plan.key(video.uri),
                        status="scored", clips=int(row["rows"]), scores_path=row["path"],
                    )
            except _lost_workers() as exc:  # a node went away with actors Ray Data could not replace: next pass
                log.warning("pass %d stopped: %s", attempt + 1, str(exc).strip().splitlines()[0])
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
        progress.close()
        ray.kill(error_log)


def _params(cfg: ScoreJobConfig, plan: Plan) -> dict:
    """Run parameters for MLflow; storage credentials are never included."""
    decode, scorer = cfg.decode, cfg.scorer
    return {
        "run_date": plan.run_date, "source.uri": cfg.source.uri, "output.uri": cfg.output.uri,
        "storage.endpoint_url": cfg.storage.endpoint_url or "",
        **{f"decode.{k}": getattr(decode, k) for k in ("clip_len", "stride", "frame_step", "grayscale", "backend")},
        "decode.resize": "x".join(map(str, decode.resize)) if decode.resize else "native",
        "decode.split_mb": decode.split_mb if decode.split_mb is not None else "off",
        "scorer.name": plan.model_name, "scorer.version": plan.model_version, "scorer.checkpoint": scorer.checkpoint,
        "scorer.threshold": plan.threshold,
        **{f"scorer.{k}": getattr(scorer, k) for k in ("batch_size", "concurrency", "precision", "memory_format", "compile")},
    }
