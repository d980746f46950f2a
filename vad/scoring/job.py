"""The nightly scoring job, in three steps:

- `plan_run`: on the driver, before any cluster work: resolve and load the model, or a fleet's model
  per camera (`vad.scoring.routing`; a bad single checkpoint or a decode mismatch fails here), list the
  source, and decide what to score from the manifest, which keys on the exact model of each video;
- `execute`: the Ray pipeline (`build_dataset`: decode tasks -> scoring actors -> writers), again over
  videos a lost worker left incomplete, the manifest and errors written as results arrive;
- `report`: one `RunSummary` whose projection (`RunSummary.figures`) becomes the `runs` row, the MLflow
  metrics and the CLI's JSON."""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from dataclasses import dataclass, field

from vad.cluster import ensure_ray
from vad.config import ScoreJobConfig
from vad.console import Progress
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
from vad.results.schema import signature_of
from vad.scoring.routing import ModelRoute, Routing, plan_routes
from vad.scoring.decoding import map_decoded_clips, task_dataset
from vad.scoring.stages import DecodeAndScoreClips, ScoreClips
from vad.scoring.summary import RunSummary
from vad.scoring.writer import start_writers, write_by_video
from vad.tracking.runs import mlflow_run

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """What a run will do, decided before any cluster work."""

    run_id: str
    run_date: str
    started_at: dt.datetime
    routing: Routing  # which model scores which camera
    decode: str  # decode signature
    videos: list[VideoRef]  # everything listed
    rejected: list[Rejected]  # objects that claim to be video but cannot be taken (errors)
    skipped: list[Rejected]  # objects that are not video (sidecars): counted, never failures
    todo: list[VideoRef] = field(default_factory=list)  # to score, grouped by model
    adopted: list[tuple] = field(default_factory=list)  # (video, path, clips) finished by an interrupted earlier run
    new_rejected: list[Rejected] = field(default_factory=list)  # rejected objects not yet in the manifest as failed
    unrouted: list[VideoRef] = field(default_factory=list)  # videos of cameras without a model (fleets): errors

    def route(self, video: VideoRef) -> ModelRoute | None:
        index = self.routing.index(video.camera)
        return None if index is None else self.routing.routes[index]

    def key(self, video: VideoRef | Rejected) -> ManifestKey:
        """The manifest key: the object and the exact model that scores it (so a camera's new
        champion re-scores that camera only). Rejected objects are keyed on the single model, or in a
        fleet on the fleet: they are bad whatever model would have scored them."""
        route = self.route(video) if isinstance(video, VideoRef) else None
        if route is None and not self.routing.fleet:
            route = self.routing.routes[0]
        if route is None:
            return ManifestKey(video.uri, "fleet", "-", self.decode)
        return ManifestKey(video.uri, route.name, route.version, self.decode)

    @property
    def model_name(self) -> str:
        return "fleet" if self.routing.fleet else self.routing.routes[0].name

    @property
    def model_version(self) -> str:
        return f"{len(self.routing.routes)} models" if self.routing.fleet else self.routing.routes[0].version


def _num_gpus(cfg: ScoreJobConfig) -> float:
    import ray

    if cfg.scorer.num_gpus is not None:
        return cfg.scorer.num_gpus
    if cfg.scorer.device == "cpu":
        return 0.0
    return 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0


def build_dataset(cfg: ScoreJobConfig, listing: list[dict], run_id: str, routes: list[ModelRoute], writers: list, errors=None):
    """The lazy Ray Dataset of the job; consuming it runs the job and yields one row per video written.

    Each listing row names its model by `model_index` into `routes`; `writers` are the pass's
    `vad.scoring.writer.WriteScores` actors (`start_writers`). `errors` is the run's
    `vad.results.ledger.ErrorLog` actor; without one, the first failure fails the job."""
    storage = cfg.storage
    ds = task_dataset(listing, cfg.decode)
    scorer_kwargs = {
        "routes": [route.to_dict() for route in routes],
        "storage": storage,
        "device": cfg.scorer.device,
        "run_id": run_id,
        "decode": cfg.decode,
        "errors": errors,
        "precision": cfg.scorer.precision,
        "memory_format": cfg.scorer.memory_format,
        "compile": cfg.scorer.compile,
        "max_models": cfg.scorer.max_models,
        "max_model_mb": cfg.scorer.max_model_mb,
    }
    ds = map_decoded_clips(
        ds, model_stage=ScoreClips, fused_stage=DecodeAndScoreClips, constructor_kwargs=scorer_kwargs,
        decode=cfg.decode, storage=storage, errors=errors, batch_size=cfg.scorer.batch_size,
        concurrency=cfg.scorer.concurrency, num_cpus=cfg.scorer.num_cpus, num_gpus=_num_gpus(cfg),
    )
    return write_by_video(ds, writers)


def plan_run(cfg: ScoreJobConfig, run_date: str | None = None) -> Plan:
    """Load the models, list the source and choose what to score; fails fast, before any cluster work."""
    from vad.tracking.runs import tracking_uri

    started_at = dt.datetime.now(dt.timezone.utc)
    run_date = run_date or started_at.date().isoformat()
    require_credentials(cfg.output.uri, cfg.storage)
    if not cfg.scorer.per_camera:  # one model: a bad checkpoint fails the run before the source is listed
        routing = plan_routes(cfg, [], tracking_uri(cfg.mlflow, cfg.work_dir))
    listing = scan_source(cfg.source, cfg.storage, run_date)
    videos, rejected = listing.videos, listing.rejected
    if cfg.scorer.per_camera:
        routing = plan_routes(cfg, [v.camera for v in videos], tracking_uri(cfg.mlflow, cfg.work_dir))
    plan = Plan(uuid.uuid4().hex[:16], run_date, started_at, routing, signature_of(cfg.decode), videos, rejected, listing.skipped)
    plan.unrouted = [v for v in videos if plan.route(v) is None]
    routed = sorted((v for v in videos if plan.route(v) is not None), key=lambda v: (routing.index(v.camera), v.key))
    manifest = read_manifest(cfg.output.uri, cfg.storage) if cfg.run.incremental else {}
    plan.todo = [v for v in routed if not is_up_to_date(manifest.get(plan.key(v)), v.size, v.mtime)]
    plan.adopted = adopt_finished(cfg.output.uri, plan.todo, plan.key, cfg.storage) if cfg.run.incremental else []
    if plan.adopted:
        log.info("%d videos were finished by an earlier, interrupted run; not scored again", len(plan.adopted))
        finished = {video.uri for video, _, _ in plan.adopted}
        plan.todo = [v for v in plan.todo if v.uri not in finished]
    plan.new_rejected = [r for r in rejected if not is_up_to_date(manifest.get(plan.key(r)), r.size, r.mtime)]
    for bad in plan.new_rejected:
        log.warning("skipped %s: %s", bad.uri, bad.reason)
    if not videos and not rejected:  # a quiet night, or a source that names the wrong place: said either way
        log.warning("no videos under %s (%d other objects skipped; source.include/exclude: %s/%s)", cfg.source.uri, len(plan.skipped),
                    list(cfg.source.include) or "all", list(cfg.source.exclude) or "none")
    log.info(
        "run %s: %d videos under %s, %d to score (%d up to date, %d without a model), %d video objects rejected, "
        "%d non-video objects skipped; %d model(s)",
        plan.run_id, len(videos), cfg.source.uri, len(plan.todo), len(routed) - len(plan.todo), len(plan.unrouted), len(rejected),
        len(plan.skipped), len(routing.routes),
    )
    return plan


def execute(cfg: ScoreJobConfig, plan: Plan, t0: float, *, verbose: bool = False) -> RunSummary:
    """Score `plan.todo` on Ray and write results, manifest and errors; returns the run's summary (`verbose`: -v, Ray's output shown)."""
    errors = [error_row(r.uri, "list", error_class="Rejected", message=r.reason, permanent=True, size=r.size) for r in plan.new_rejected]
    errors += [
        error_row(v.uri, "model", error_class="NoModel", message=plan.routing.missing[v.camera], size=v.size) for v in plan.unrouted
    ]
    manifest_out = ManifestWriter(cfg.output.uri, plan.run_date, plan.run_id, cfg.storage, flush_s=cfg.run.manifest_flush_s)
    for video, path, rows in plan.adopted:
        manifest_out.add(uri=video.uri, size=video.size, mtime=video.mtime, key=plan.key(video), status="scored", clips=rows, scores_path=path)
    files, clips, anomalies, events = [], 0, 0, 0
    if plan.todo:
        ensure_ray(cfg.ray.address, cfg.ray.num_cpus, verbose=verbose)
        written, stage_errors = _score_videos(cfg, plan, manifest_out)
        for row in written:
            files.append(row["path"])
            clips += int(row["rows"])
            anomalies += int(row["anomalies"])
            events += int(row["events"])
        errors += stage_errors
    by_uri = {v.uri: v for v in plan.videos} | {r.uri: r for r in plan.rejected}
    for row in errors:
        if row["permanent"]:  # not tried again until the object changes
            bad = by_uri[row["uri"]]
            manifest_out.add(uri=bad.uri, size=bad.size, mtime=bad.mtime, key=plan.key(bad), status="failed", clips=0, scores_path=None)
    manifest_out.flush()
    write_errors(cfg.output.uri, plan.run_date, plan.run_id, errors, cfg.storage)
    camera_of = {v.uri: v.camera for v in plan.videos}
    unscored = sorted({camera_of[row["uri"]] for row in errors if row["stage"] == "model" and row["uri"] in camera_of})
    if unscored:
        log.warning("cameras left unscored (their model could not be had; see the errors table, stage 'model'): %s", ", ".join(unscored))
    return RunSummary(
        plan.run_id, plan.run_date, len(plan.videos), clips, anomalies, files, plan.rejected, time.perf_counter() - t0,
        up_to_date=len(plan.videos) - len(plan.todo) - len(plan.unrouted), errors=errors,
        attempted=len(plan.todo) + len(plan.new_rejected) + len(plan.unrouted),
        max_failure_rate=cfg.run.max_failure_rate, started_at=plan.started_at, finished_at=dt.datetime.now(dt.timezone.utc),
        source_uri=cfg.source.uri, model_name=plan.model_name, model_version=plan.model_version, skipped=len(plan.skipped),
        events=events, unscored_cameras=unscored,
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


def run_scoring(cfg: ScoreJobConfig, run_date: str | None = None, *, verbose: bool = False) -> RunSummary:
    """Score every new or changed video under `cfg.source.uri`; returns what was written.

    Bad objects end up in the `errors` table, not in an exception; `RunSummary.failed` says
    whether they were too many (`run.max_failure_rate`)."""
    t0 = time.perf_counter()
    plan = plan_run(cfg, run_date)
    with mlflow_run(cfg.mlflow, cfg.work_dir, cfg.run_name or f"score-{plan.run_date}", {"vad.run_id": plan.run_id, "vad.job": "score"}) as tracker:
        tracker.log_params(_params(cfg, plan))
        summary = execute(cfg, plan, t0, verbose=verbose)
        report(cfg, summary, tracker)
    if cfg.report.enabled:
        from vad.review.report import review_page

        summary.report_path = review_page(cfg, summary, verbose=verbose)
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
            writers = start_writers(cfg, error_log)
            try:
                listing = [{**v.to_row(), "model_index": plan.routing.index(v.camera)} for v in remaining]
                for row in build_dataset(cfg, listing, plan.run_id, plan.routing.routes, writers, error_log).iter_rows():
                    video = by_uri[row["video_uri"]]
                    if video.uri not in done:
                        done.add(video.uri)
                        written.append(row)
                        clips += int(row["rows"])
                        progress.update(len(done), f"{clips} clips ({clips / max(progress.elapsed(), 1e-9):.1f} clips/s)")
                    manifest_out.add(
                        uri=video.uri, size=video.size, mtime=video.mtime, key=plan.key(video),
                        status="scored", clips=int(row["rows"]), scores_path=row["path"],
                    )
            except _lost_workers() as exc:  # a node went away with actors Ray Data could not replace: next pass
                log.warning("pass %d stopped: %s", attempt + 1, str(exc).strip().splitlines()[0])
            finally:
                for writer in writers:  # with them go the videos they hold incomplete (lost clips)
                    ray.kill(writer)
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
        "scorer.models": len(plan.routing.routes), "scorer.cameras_without_model": len(plan.routing.missing),
        "scorer.threshold": "per model" if plan.routing.fleet else plan.routing.routes[0].threshold,
        "scorer.fallback": scorer.fallback or "",
        **{f"scorer.{k}": getattr(scorer, k) for k in ("batch_size", "concurrency", "precision", "memory_format", "compile")},
    }
