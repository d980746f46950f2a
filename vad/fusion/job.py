"""`vad fuse`: a fused model's rows, made from its members' rows of the same results root, in three steps:

- `plan_fusion` (`vad.fusion.plan`): on the driver, from the manifest: each camera's members resolved
  (their exact model, its calibration), the fused model's version for the camera (a digest of the rule and
  the members' versions and calibrations, so a member's new champion re-fuses its camera only), and per
  video what to do: fuse it, skip it (fused already from the same members and the same object), or record
  why not (a member that has not scored it, scored an older copy, or has no model or calibration:
  `errors`, stage `member`);
- `execute`: each video's member files read, fused (`vad.fusion.rules`) and written as the fused model's
  `scores` file (its masks and objects beside it), the manifest entry after it;
- `report`: the `runs` row, MLflow metrics and the CLI's JSON from one `RunSummary`, and the review page.

Fusion reads and writes results only; it decodes no video, so members that need different decoding (small
grey clips, full frames) are fused all the same. It runs on the driver, `fusion.workers` videos at once.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vad.config import FuseJobConfig
from vad.console import Progress
from vad.fusion.plan import DECODE, CameraFusion, FusePlan, VideoTask, plan_fusion
from vad.fusion.rules import covering_reason, fuse_video, reason_of
from vad.io.storage import filesystem, parse_uri
from vad.results.events import events_table
from vad.results.ledger import ManifestKey, ManifestWriter, error_row, write_errors
from vad.results.runs import write_run_record
from vad.results.schema import MASKS_SCHEMA, OBJECTS_SCHEMA, SCORES_SCHEMA, SCORES_SCHEMA_VERSION, result_file_name
from vad.results.tables import source_metadata, write_video_results
from vad.scoring.summary import RunSummary
from vad.tracking.runs import mlflow_run

log = logging.getLogger(__name__)

MAX_OBJECTS = 8  # objects kept per fused clip, worst first


def side_path(scores_path: str, table: str) -> str:
    """The `masks` / `objects` file beside a scores file (same partition, same name)."""
    head, sep, tail = scores_path.rpartition("/scores/date=")
    return f"{head}/{table}/date={tail}" if sep else scores_path


def _read(fs, path: str, optional: bool = False) -> pa.Table | None:
    """A Parquet file; with `optional`, None where there is none (a side table a member does not write)."""
    from pyarrow.fs import FileType

    if optional and fs.get_file_info(path).type != FileType.File:
        return None
    with fs.open_input_file(path) as handle:
        return pq.read_table(handle)


def _read_scores(fs, path: str) -> pa.Table:
    """A member's scores file, in clip order, with the columns of the current schema (files of older schema versions
    lack some, e.g. `reason`: null)."""
    table = _read(fs, path).sort_by("clip_index")
    for column in SCORES_SCHEMA:
        if column.name not in table.column_names:
            table = table.append_column(column, pa.nulls(table.num_rows, column.type))
    return table


def fuse_one(task: VideoTask, fusion: CameraFusion, plan: FusePlan, rule: str, output_uri: str, fs, merge_gap_s: float = 2.0) -> dict:
    """Read, fuse and write one video; returns the written row (path, rows, anomalies, events)."""
    tables = [_read_scores(fs, p) for p in task.paths]
    fused = fuse_video(tables, fusion.members, rule)
    reference = tables[0]
    ref = reference.to_pydict()
    n = reference.num_rows
    per_member = [t.select(["start_frame", "end_frame", "score", "reason"]).to_pydict() for t in tables]
    reasons = [
        reason_of(fusion.members[lead], float(value), covering_reason(per_member[lead], int(frame)))
        for lead, value, frame in zip(fused.leader, fused.leader_value, fused.worst_frame)
    ]
    scored_at = dt.datetime.now(dt.timezone.utc)
    flagged = fused.scores > fusion.threshold
    columns = {
        "schema_version": pa.array(np.full(n, SCORES_SCHEMA_VERSION, np.int16)), "run_id": pa.array([plan.run_id] * n),
        "model_name": pa.array([plan.name] * n), "model_version": pa.array([fusion.version] * n),
        "model_fallback": pa.array(np.any([t["model_fallback"].fill_null(False).to_numpy(zero_copy_only=False) for t in tables], axis=0))
        if n else pa.array([], pa.bool_()),
        "score": pa.array(fused.scores, pa.float32()), "threshold": pa.array(np.full(n, fusion.threshold), pa.float32()),
        "is_anomaly": pa.array(flagged),
        "frame_scores": pa.array([list(map(float, f)) for f in fused.frame_scores], SCORES_SCHEMA.field("frame_scores").type),
        "reason": pa.array(reasons, pa.string()), "scored_at": pa.array([scored_at] * n, SCORES_SCHEMA.field("scored_at").type),
    }
    scores = pa.Table.from_arrays([columns.get(f.name, reference[f.name]).cast(f.type) for f in SCORES_SCHEMA], schema=SCORES_SCHEMA)
    scores = scores.replace_schema_metadata(source_metadata(scores.schema.metadata, task.size, task.mtime))
    name = result_file_name(task.uri, plan.name, fusion.version, DECODE)
    sides = {}
    masks = _read(fs, side_path(task.paths[0], "masks"), optional=True)
    if masks is not None:  # the first member's clips are the fused clips: its masks are theirs
        masks = masks.set_column(masks.schema.get_field_index("run_id"), "run_id", pa.array([plan.run_id] * masks.num_rows))
        sides["masks"] = masks.cast(MASKS_SCHEMA)
    objects = _fused_objects(fs, task, ref, plan, fusion)
    if objects is not None:
        sides["objects"] = objects
    sides["events"] = events = events_table(scores, merge_gap_s)
    path = write_video_results(fs, parse_uri(output_uri), task.date, task.camera, name, scores, sides)
    return {"path": path, "rows": n, "anomalies": int(np.sum(flagged)), "events": events.num_rows}


def _fused_objects(fs, task: VideoTask, ref: dict, plan: FusePlan, fusion: CameraFusion) -> pa.Table | None:
    """The members' objects, each put in the fused clip whose frames hold it, relabelled as the fused model's."""
    found = [t for t in (_read(fs, side_path(p, "objects"), optional=True) for p in task.paths) if t is not None and t.num_rows]
    if not found:
        return None
    rows = pa.concat_tables(found).to_pylist()
    starts = np.asarray(ref["start_frame"])
    by_clip: dict[int, list[dict]] = {}
    for row in rows:
        i = int(np.searchsorted(starts, row["frame"], side="right")) - 1
        if i < 0 or row["frame"] > ref["end_frame"][i]:
            continue
        by_clip.setdefault(i, []).append(row)
    out = []
    for i, members in sorted(by_clip.items()):
        for row in sorted(members, key=lambda r: -(r["score"] or 0))[:MAX_OBJECTS]:
            out.append({**row, "run_id": plan.run_id, "clip_id": ref["clip_id"][i], "clip_index": ref["clip_index"][i],
                        "model_name": plan.name, "model_version": fusion.version})
    return pa.Table.from_pylist(out, schema=OBJECTS_SCHEMA) if out else None


def execute(cfg: FuseJobConfig, plan: FusePlan, t0: float) -> RunSummary:
    """Fuse `plan.todo` (`fusion.workers` at once) and write the fused files, manifest and errors."""
    manifest_out = ManifestWriter(cfg.output.uri, plan.run_date, plan.run_id, cfg.storage, flush_s=cfg.run.manifest_flush_s)
    fs = filesystem(parse_uri(cfg.output.uri), cfg.storage)
    errors = list(plan.errors)
    files, clips, anomalies, events = [], 0, 0, 0
    progress = Progress("fusing", len(plan.todo), "videos")

    def work(task: VideoTask):
        try:
            return task, fuse_one(task, plan.cameras[task.camera], plan, cfg.fusion.rule, cfg.output.uri, fs, cfg.alerts.merge_gap_s), None
        except Exception as exc:  # noqa: BLE001 - one bad file is that video's error row, not the night's end
            log.warning("could not fuse %s: %s: %s", task.uri, type(exc).__name__, exc)
            return task, None, exc

    try:
        with ThreadPoolExecutor(cfg.fusion.workers) as pool:
            for done, (task, row, exc) in enumerate(pool.map(work, plan.todo), 1):
                if exc is not None:
                    errors.append(error_row(task.uri, "fuse", exc, size=task.size))
                else:
                    files.append(row["path"])
                    clips += row["rows"]
                    anomalies += row["anomalies"]
                    events += row["events"]
                    key = ManifestKey(task.uri, plan.name, plan.cameras[task.camera].version, DECODE)
                    manifest_out.add(uri=task.uri, size=task.size, mtime=task.mtime, key=key, status="scored", clips=row["rows"], scores_path=row["path"])
                progress.update(done, f"{clips} clips")
    finally:
        progress.close()
        manifest_out.flush()
    write_errors(cfg.output.uri, plan.run_date, plan.run_id, errors, cfg.storage)
    return RunSummary(
        plan.run_id, plan.run_date, plan.videos, clips, anomalies, files, wall_s=time.perf_counter() - t0, up_to_date=plan.up_to_date,
        errors=errors, attempted=len(plan.todo) + len(plan.errors), max_failure_rate=cfg.run.max_failure_rate,
        started_at=plan.started_at, finished_at=dt.datetime.now(dt.timezone.utc), source_uri=cfg.output.uri,
        model_name=plan.name, model_version=_versions(plan), events=events,
    )


def _versions(plan: FusePlan) -> str:
    versions = sorted({c.version for c in plan.cameras.values() if c.version})
    return versions[0] if len(versions) == 1 else f"{len(versions)} versions"


def run_fusion(cfg: FuseJobConfig, run_date: str | None = None, *, verbose: bool = False) -> RunSummary:
    """Fuse every video the members have scored and the fused model has not (or not from these members)."""
    t0 = time.perf_counter()
    plan = plan_fusion(cfg, run_date)
    with mlflow_run(cfg.mlflow, cfg.work_dir, cfg.run_name or f"fuse-{plan.run_date}", {"vad.run_id": plan.run_id, "vad.job": "fuse"}) as tracker:
        tracker.log_params({"fusion.name": plan.name, "fusion.rule": cfg.fusion.rule, "fusion.threshold_quantile": cfg.fusion.threshold_quantile,
                            **{f"fusion.member{i + 1}": f"{m.model} x{m.weight:g}" for i, m in enumerate(cfg.fusion.members)},
                            "output.uri": cfg.output.uri})
        summary = execute(cfg, plan, t0)
        write_run_record(cfg.output.uri, summary.runs_row(), cfg.storage)
        tracker.log_metrics(summary.metrics())
        summary.mlflow_run_id = tracker.run_id
    log.info("fusion run %s: %d videos fused (%d clips, %d flagged), %d up to date, %d errors",
             plan.run_id, len(summary.files), summary.clips, summary.anomalous_clips, summary.up_to_date, len(summary.errors))
    if cfg.report.enabled and summary.files:
        from vad.review.report import review_page

        summary.report_path = review_page(cfg, summary, verbose=verbose)
    return summary
