"""The `vad` commands that read results: query, evaluate, feedback, report."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from vad.console import job_output


def _storage(args):
    """Storage settings of a command that reads results: `--config`'s storage section (or the AWS
    chain), with `--endpoint-url` over it."""
    from vad.config import StorageConfig, load_storage

    storage = load_storage(args.config) if args.config else StorageConfig()
    return storage.model_copy(update={"endpoint_url": args.endpoint_url}) if args.endpoint_url else storage


class StorageUnreachable(RuntimeError):
    """A results root that cannot be read: `main` says so in one line (with what to set for S3) and exits 2."""


def _unreadable(results: str, exc: OSError) -> StorageUnreachable:
    where = "" if not results.startswith("s3://") else (
        "; for MinIO or another S3-compatible store give --endpoint-url (or --config with storage.endpoint_url); "
        "credentials come from --config or the AWS chain"
    )
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return StorageUnreachable(f"cannot read {results}: {first}{where}")


def cmd_feedback(args) -> int:
    from vad.results.feedback import FeedbackError, record_feedback

    answer = "normal" if args.normal else "anomaly"
    try:
        row = record_feedback(args.results, args.event_id, answer, operator=args.operator, note=args.note, storage=_storage(args))
    except FeedbackError as exc:
        print(f"vad feedback: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        raise _unreadable(args.results, exc) from None
    print(f"{row['event_id']}: {answer} ({row['camera']}, {row['video_uri']} {row['start_time_s']:.1f}-{row['end_time_s']:.1f} s), "
          f"by {row['operator']}")
    return 0


def cmd_query(args) -> int:
    import duckdb

    from vad.io.storage import parse_uri
    from vad.results.sql import format_table, run_query

    where = parse_uri(args.results)
    if where.scheme == "file" and not Path(where.path).is_dir():  # a mistyped folder is not an empty night
        print(f"vad query: no results folder at {args.results}", file=sys.stderr)
        return 2
    sql = args.sql if args.sql != "-" else sys.stdin.read()
    try:
        columns, rows = run_query(args.results, sql, _storage(args))
    except OSError as exc:
        raise _unreadable(args.results, exc) from None
    except duckdb.Error as exc:
        print(f"vad query: {exc}", file=sys.stderr)
        return 2
    if args.format == "json":
        print(json.dumps([dict(zip(columns, r)) for r in rows], default=str, indent=1))
    elif args.format == "csv":
        import csv

        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
    else:
        print(format_table(columns, rows))
    return 0


def _load_labels(spec: str) -> dict:
    import numpy as np

    if spec == "ped2" or spec.startswith("ped2:"):
        from vad.datasets.ped2 import load_ped2

        return load_ped2().test_labels(spec.partition(":")[2] or "all")
    with open(spec) as f:
        raw = json.load(f)
    if not isinstance(raw, dict):
        raise ValueError(f"{spec}: expected a JSON object mapping video key -> list of 0/1 frame labels")
    return {k: np.asarray(v, dtype=np.int8) for k, v in raw.items()}


def cmd_evaluate(args) -> int:
    from vad.evaluation.evaluate import evaluate_run, log_evaluation

    labels = _load_labels(args.labels)
    try:
        report = evaluate_run(
            args.results, labels, run_id=args.run_id, storage=_storage(args), normalise=args.normalise,
            smoothing=args.smoothing, plots_dir=args.plots, masks_dir=args.masks,
        )
    except OSError as exc:
        raise _unreadable(args.results, exc) from None
    print(
        f"frame-level AUC  micro (all frames concatenated) {report['auc_micro']:.4f}   "
        f"macro (mean over videos) {report['auc_macro']:.4f}   EER {report['eer']:.4f}   "
        f"[{report['videos']} videos, {report['frames']} frames, "
        f"per-video normalisation {report['normalisation']}, smoothing {args.smoothing}]"
    )
    if "paper" in report:
        paper = report["paper"]
        print(
            f"with the scorer's paper's per-video normalisation ({report['paper_normalisation']}; it assumes every video "
            f"holds an anomaly): micro {paper['auc_micro']:.4f}   macro {paper['auc_macro']:.4f}   EER {paper['eer']:.4f}"
        )
    if "event_recall" in report:
        print(
            f"events at the model's threshold: {report['segments_hit']} of {report['segments']} anomalous segments hit "
            f"(event recall {report['event_recall']:.2f}), {report['false_events']} false events "
            f"({report['false_events_per_hour']:.1f} per hour of normal footage), mean delay {report['mean_delay_s']:.2f} s"
        )
    if report["missing_videos"]:
        print(f"labelled but not scored: {', '.join(report['missing_videos'])}")
    if "pixel_f1" in report:
        from vad.evaluation.metrics import describe_pixel_report

        print(f"{describe_pixel_report(report)} [{report['pixel_frames']} frames]")
        if report["pixel_missing_videos"]:
            print(f"pixel ground truth but no masks: {', '.join(report['pixel_missing_videos'])}")
    for plot in report.get("plots", []):
        print(f"plot: {plot}")
    if args.mlflow_run_id:
        import mlflow

        if args.tracking_uri:
            mlflow.set_tracking_uri(args.tracking_uri)
        log_evaluation(args.mlflow_run_id, report)
    return 0


def cmd_report(args) -> int:
    from vad.config import MlflowConfig
    from vad.review.report import run_report
    from vad.tracking.runs import local_store, tracking_uri

    storage = _storage(args)
    # MLflow: the given store, or the work folder's own if a job made one (none is created here)
    use_mlflow = not args.no_mlflow and (args.tracking_uri or args.mlflow_run_id or local_store(args.work_dir).is_file())
    uri = args.tracking_uri or tracking_uri(MlflowConfig(), args.work_dir) if use_mlflow else None
    try:
        with job_output(args.work_dir, "report", verbose=args.verbose):  # Ray's and MLflow's logs to a file, as for the jobs
            summary = run_report(
                args.results, storage=storage, date=args.date, run_id=args.run_id, model=args.model, top_k=args.top, out_dir=args.out,
                mlflow_run_id=args.mlflow_run_id, tracking_uri=uri, verbose=args.verbose,
            )
    except OSError as exc:
        raise _unreadable(args.results, exc) from None
    if summary.path is None:
        print(f"vad report: {summary.message}", file=sys.stderr)
        return 1
    print(summary.line() + (f"\n{summary.message}" if summary.message else ""))
    if summary.mlflow_run_id:
        print(f"logged to MLflow run {summary.mlflow_run_id} (artifact report/)")
    return 0
