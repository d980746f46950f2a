"""Frame-level evaluation of a scoring run against ground-truth frame labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vad.config import StorageConfig
from vad.evaluation.metrics import frame_level_report, frames_from_clips, matches, prepare_scores
from vad.results.sql import with_readable_files


def video_frame_scores(
    results_uri: str, run_id: str | None = None, storage: StorageConfig | None = None
) -> tuple[dict[str, list], str | None, str]:
    """(video_uri -> list of (start_frame, frame_step, frame_scores) rows, model name, run id) of one
    run (the latest if None)."""

    def read(con) -> tuple[list[tuple], str]:
        chosen = run_id
        if chosen is None:
            latest = con.execute("SELECT run_id FROM scores ORDER BY scored_at DESC LIMIT 1").fetchone()
            if latest is None:
                raise ValueError(f"no scores under {results_uri}")
            chosen = latest[0]
        return con.execute(
            "SELECT video_uri, start_frame, frame_step, frame_scores, model_name FROM scores WHERE run_id = ? "
            "ORDER BY video_uri, clip_index",
            [chosen],
        ).fetchall(), chosen

    rows, chosen = with_readable_files(results_uri, storage, read)
    if not rows:
        raise ValueError(f"no scores of run {chosen} under {results_uri}")
    out: dict[str, list] = {}
    for uri, start, step, scores, _ in rows:
        out.setdefault(uri, []).append((start, step, scores))
    return out, (rows[0][4] if rows else None), chosen


def match_labels(clips: dict[str, list], labels: dict[str, np.ndarray], overlap: str = "mean"):
    """Pairs (key, labels, frame scores) for each labelled video; keys match video uris by suffix."""
    pairs, missing = [], []
    for key, y in labels.items():
        match = [uri for uri in clips if matches(uri, key)]
        if not match:
            missing.append(key)
            continue
        pairs.append((key, np.asarray(y), frames_from_clips(len(y), clips[match[0]], overlap)))
    return pairs, missing


def paper_normalisation(model_name: str) -> str:
    """The per-video normalisation of the paper of the scorer behind `model_name` (a registered model's too:
    `vad.tracking.registry.scorer_of`); min-max when the name leads to no scorer."""
    from vad.models.scorers import evaluation_normalisation
    from vad.tracking.registry import scorer_of

    return evaluation_normalisation(scorer_of(model_name) or model_name)


def evaluate_run(
    results_uri: str,
    labels: dict[str, np.ndarray],
    run_id: str | None = None,
    storage: StorageConfig | None = None,
    normalise: str = "none",
    smoothing: int = 1,
    overlap: str = "mean",
    plots_dir: str | Path | None = None,
    masks_dir: str | Path | None = None,
) -> dict:
    """`labels` maps a video key (matched as a suffix of the video uri) to its per-frame 0/1 labels.

    `normalise`: "none" (the default) compares the scores as the nightly job does, against one scale
    for every video; "auto" takes the run's scorer's paper's per-video normalisation
    (`vad.models.scorers.evaluation_normalisation`), which assumes every video holds an anomaly and so
    stretches a quiet video's noise. The report says which was used; where the paper's differs from
    the one used, its figures are added under "paper" (micro, macro, EER, and its name under
    "paper_normalisation"), for comparing with published numbers. With `plots_dir`, writes roc.png and timelines.png there and lists
    them under "plots". With `masks_dir` (pixel ground truth, `vad.evaluation.pixels`), adds the
    pixel-level report of the run's masks and heat maps."""
    clips, model_name, run_id = video_frame_scores(results_uri, run_id, storage)
    if normalise == "auto":
        normalise = paper_normalisation(model_name or "")
    pairs, missing = match_labels(clips, labels, overlap)
    if not pairs:
        raise ValueError(f"none of the {len(labels)} labelled videos were scored in this run")
    report = frame_level_report([y for _, y, _ in pairs], [s for _, _, s in pairs], normalise, smoothing)
    report["missing_videos"] = missing
    report["normalisation"] = normalise
    paper = paper_normalisation(model_name or "")
    if paper != normalise:
        other = frame_level_report([y for _, y, _ in pairs], [s for _, _, s in pairs], paper, smoothing)
        report["paper_normalisation"] = paper
        report["paper"] = {k: other[k] for k in ("auc_micro", "auc_macro", "eer")}
    report |= _event_figures(results_uri, run_id, labels, clips, storage)
    if masks_dir is not None:
        from vad.evaluation.pixels import pixel_report

        report |= pixel_report(results_uri, masks_dir, run_id, storage)
    if plots_dir is not None:
        from vad.evaluation.plots import roc_plot, timeline_plot

        out = Path(plots_dir)
        out.mkdir(parents=True, exist_ok=True)
        prepared = {k: (y, prepare_scores(s, normalise, smoothing)) for k, y, s in pairs}
        ys = np.concatenate([y for y, _ in prepared.values()])
        ss = np.concatenate([s for _, s in prepared.values()])
        keep = ~np.isnan(ss)
        report["plots"] = [
            str(roc_plot(ys[keep], ss[keep], out / "roc.png", f"frame-level ROC ({len(prepared)} videos)")),
            str(timeline_plot(prepared, out / "timelines.png")),
        ]
    return report


def _event_figures(results_uri: str, run_id: str, labels: dict, clips: dict, storage) -> dict:
    """`event_report` of the run's events (the threshold its model carries) for the labelled videos."""
    from vad.evaluation.metrics import event_report

    def read(con):
        events = con.execute("SELECT video_uri, start_frame, end_frame FROM events WHERE run_id = ?", [run_id]).fetchall()
        timing = con.execute("SELECT video_uri, max(end_time_s) / (max(end_frame) + 1) FROM scores WHERE run_id = ? GROUP BY video_uri",
                             [run_id]).fetchall()
        return events, dict(timing)

    events, frame_s = with_readable_files(results_uri, storage, read)
    videos = []
    for key, y in labels.items():
        match = [uri for uri in clips if matches(uri, key)]
        if match and frame_s.get(match[0]):
            videos.append((np.asarray(y), [(int(s), int(e)) for uri, s, e in events if uri == match[0]], float(frame_s[match[0]])))
    return event_report(videos) if videos else {}


def log_evaluation(mlflow_run_id: str, report: dict) -> None:
    """Metrics (`eval/auc_micro` ...), the normalisation used (tag `eval/normalisation`) and the plots
    of `report` into an existing MLflow run."""
    import mlflow

    with mlflow.start_run(run_id=mlflow_run_id):
        metrics = {f"eval/{k}": v for k, v in report.items() if isinstance(v, (int, float))}
        metrics |= {f"eval/paper_{k}": v for k, v in report.get("paper", {}).items()}
        mlflow.log_metrics(metrics)
        mlflow.set_tag("eval/normalisation", report["normalisation"])
        if "paper_normalisation" in report:
            mlflow.set_tag("eval/paper_normalisation", report["paper_normalisation"])
        for plot in report.get("plots", []):
            mlflow.log_artifact(plot, artifact_path="eval")
