"""`vad report`: plan (read the night with SQL, find each flagged clip's video and frames) -> execute
(cut the previews with Ray Data tasks) -> report (write the page, log it to the scoring run in MLflow,
one summary for the CLI)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from vad.config import StorageConfig
from vad.review.night import Night, read_night

log = logging.getLogger(__name__)


@dataclass
class ReportSummary:
    path: str | None  # the page; None when there was nothing to write it from
    date: str | None
    clips: int = 0
    flagged: int = 0
    shown: int = 0  # events on the page
    previews_failed: list[str] = field(default_factory=list)  # event ids whose video could not be read
    message: str = ""
    mlflow_run_id: str | None = None
    reasons: list[str] = field(default_factory=list)  # "#rank camera score: reason" of the top events whose scorer explains
    events: int = 0  # the night's events
    size_bytes: int = 0  # the page's size

    def line(self) -> str:
        if self.path is None:
            return self.message
        failed = f"; {len(self.previews_failed)} previews could not be cut" if self.previews_failed else ""
        head = (f"report for {self.date}: {self.clips} clips, {self.flagged} flagged in {self.events} events, top {self.shown} shown"
                f"{failed} ({self.size_bytes / 2**20:.1f} MB) -> {self.path}")
        return "\n".join([head, *(f"  {r}" for r in self.reasons)])


MAX_PREVIEW_FRAMES = 32  # an event's animation samples at most this many of its frames (its peak among them)


def event_frames(event: dict, most: int = MAX_PREVIEW_FRAMES) -> list[int]:
    """The video frames an event's preview shows: its span at the scoring frame step, evenly thinned to at most
    `most`, the peak frame always among them."""
    step = max(1, int(event["frame_step"]))
    frames = list(range(int(event["start_frame"]), int(event["end_frame"]) + 1, step))
    if len(frames) > most:
        frames = [frames[i] for i in sorted({round(i * (len(frames) - 1) / (most - 1)) for i in range(most)})]
    peak = int(event["peak_frame"])
    if peak not in frames:
        frames[min(range(len(frames)), key=lambda i: abs(frames[i] - peak))] = peak
        frames = sorted(set(frames))
    return frames


def _preview_rows(night: Night, storage: StorageConfig | None) -> list[dict]:
    """One row per top event: its video (each listed once, several at a time: a store that does not answer costs
    its retries once, not once per video) and the frame indices to read."""
    from concurrent.futures import ThreadPoolExecutor

    from vad.config import SourceConfig
    from vad.io.sources import list_videos

    def listed(uri: str) -> dict | None:
        try:
            found, _ = list_videos(SourceConfig(uri=uri), storage, run_date=night.date)
            return found[0].to_row() if found else None
        except (OSError, ValueError) as exc:
            log.warning("cannot list %s for its preview: %s", uri, exc)
            return None

    uris = list(dict.fromkeys(event["video_uri"] for event in night.top))
    with ThreadPoolExecutor(max(1, min(8, len(uris)))) as pool:
        videos = dict(zip(uris, pool.map(listed, uris)))
    return [{"event_id": e["event_id"], "video": videos[e["video_uri"]], "task": preview_task(e, videos[e["video_uri"]], event_frames(e))}
            for e in night.top]


def preview_task(event: dict, video: dict | None, frames: list[int]) -> str:
    """What one preview needs, as a JSON string (a column Ray Data passes through untouched): the frames to show, the
    peak frame, and the peak clip's heat maps and masks with the video frames they belong to."""
    import base64

    def b64(items) -> list[str]:
        return [base64.b64encode(bytes(x)).decode() for x in (items if items is not None else [])]

    heat = b64(event.get("heatmap_png"))
    start, step = int(event.get("peak_start", frames[0] if frames else 0)), max(1, int(event.get("frame_step", 1)))
    return json.dumps({
        "video": video, "frames": frames, "peak_frame": event.get("peak_frame"), "heatmap_png": heat,
        "heatmap_scale": [float(x) for x in (event.get("heatmap_scale") if event.get("heatmap_scale") is not None else [])],
        "mask_png": b64(event.get("mask_png")), "heat_frames": [start + k * step for k in range(max(len(heat), len(event.get("mask_png") or [])))],
        "objects": event.get("objects") or [],
    }, default=str)


def cut_previews(night: Night, storage: StorageConfig | None, concurrency: int = 2) -> dict[str, dict]:
    """event_id -> {animation, strip, error}: one Ray Data task per event, `concurrency` at a time."""
    import ray

    from vad.review.previews import preview_batch

    rows = _preview_rows(night, storage)
    missing = {r["event_id"]: {"animation": b"", "strip": b"", "error": "its video is no longer listed"} for r in rows if r["video"] is None}
    todo = [{"event_id": r["event_id"], "task": r["task"]} for r in rows if r["video"] is not None]
    if not todo:
        return missing
    ds = ray.data.from_items(todo, override_num_blocks=len(todo)).map_batches(
        preview_batch, fn_kwargs={"storage": storage}, batch_size=1,
        compute=ray.data.TaskPoolStrategy(size=max(1, min(concurrency, len(todo)))),
        num_cpus=1,
    )
    out = dict(missing)
    for row in ds.iter_rows():
        out[row["event_id"]] = {"animation": bytes(row["animation"]), "strip": bytes(row["strip"]), "error": row["error"]}
    return out


def scoring_run(run_ids: list[str], tracking: str) -> str | None:
    """The MLflow run of the night's scoring run (tag vad.run_id), when the night is one run and the store has it."""
    import mlflow

    if len(run_ids) != 1:
        return None
    try:
        found = mlflow.search_runs(search_all_experiments=True, filter_string=f"tags.`vad.run_id` = '{run_ids[0]}'", output_format="list")
    except Exception as exc:  # noqa: BLE001 - no store, or not reachable: the page is written anyway
        log.warning("MLflow at %s not searched: %s", tracking, exc)
        return None
    return found[0].info.run_id if len(found) == 1 else None


def run_report(
    results_uri: str, *, storage: StorageConfig | None = None, date: str | None = None, run_id: str | None = None,
    model: str | None = None, top_k: int = 12,
    out_dir: str | Path = "vad-work/reports", concurrency: int = 2, ray_address: str | None = None, num_cpus: int | None = None,
    mlflow_run_id: str | None = None, tracking_uri: str | None = None, verbose: bool = False,
) -> ReportSummary:
    """Write the night's page under `out_dir` (report-<date>[-<model>][-<run>].html) and, with `mlflow_run_id`,
    log it to that run as an artifact (`report/`); with `tracking_uri` and no `mlflow_run_id`, to the
    night's scoring run found in that store. The night is the `date` partition of the scores (the
    videos' date); without `date`, the latest one (of `run_id`'s or `model`'s scores, when given). Each camera
    is shown by one model: `run_id`'s, `model` (a fleet's name without `.<camera>`), or the one that scored it last."""
    from vad.cluster import ensure_ray
    from vad.review.page import render

    night = read_night(results_uri, storage, date=date, run_id=run_id, model=model, top_k=top_k)
    if night.date is None or not night.totals.get("clips"):
        what = " ".join(filter(None, [f"run {run_id}" if run_id else None, f"model {model}" if model else None, date])) or "any night"
        return ReportSummary(None, night.date, message=f"no results for {what} under {results_uri}: nothing to report")
    if tracking_uri is not None:
        import mlflow

        mlflow.set_tracking_uri(tracking_uri)
        mlflow_run_id = mlflow_run_id or scoring_run(night.run_ids, tracking_uri)
    previews: dict[str, dict] = {}
    if night.top:
        ensure_ray(ray_address, num_cpus, verbose=verbose)
        previews = cut_previews(night, storage, concurrency)
    generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = render(night, previews, generated_at=generated)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    named = "".join(f"-{re.sub(r'[^A-Za-z0-9._-]+', '_', part)}" for part in (model, run_id) if part)
    path = out / f"report-{night.date}{named}.html"
    path.write_text(page, encoding="utf-8")
    failed = [event_id for event_id, p in previews.items() if p.get("error")]
    summary = ReportSummary(
        str(path.resolve()), night.date, night.totals["clips"], night.totals["flagged"], len(night.top), failed,
        "" if night.top else f"no events on {night.date}", mlflow_run_id,
        [f"#{rank} {e['camera']} {e['score']:.3g}: {e['reason']}" for rank, e in enumerate(night.top, 1) if e.get("reason")],
        night.totals["events"], path.stat().st_size,
    )
    if mlflow_run_id is not None:
        import mlflow

        with mlflow.start_run(run_id=mlflow_run_id):
            mlflow.log_artifact(str(path), artifact_path="report")
    return summary


def review_page(cfg, summary, *, verbose: bool = False) -> str | None:
    """The page of a job's run (`vad score`, `vad fuse`: `cfg` with output, storage, report, ray and work_dir
    sections; `summary` its `RunSummary`), logged to the run's MLflow run. A failure is logged, not raised:
    the rows are written by then."""
    try:
        page = run_report(
            cfg.output.uri, storage=cfg.storage, run_id=summary.run_id, top_k=cfg.report.top_k,
            out_dir=cfg.report.out_dir or Path(cfg.work_dir) / "reports", concurrency=cfg.report.concurrency,
            ray_address=cfg.ray.address, num_cpus=cfg.ray.num_cpus, mlflow_run_id=summary.mlflow_run_id, verbose=verbose,
        )
    except Exception as exc:  # noqa: BLE001
        log.warning("the review page could not be written: %s: %s", type(exc).__name__, exc)
        return None
    log.info("%s", page.line())
    return page.path
