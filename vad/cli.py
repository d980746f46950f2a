"""The `vad` command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vad import __version__
from vad.console import job_output, setup_logging


def _overrides(items: list[str]) -> dict:
    from vad.config import parse_override

    return dict(parse_override(item) for item in items)


def cmd_demo(args) -> int:
    from vad.demo import run_demo

    with job_output(args.work_dir, "demo", verbose=args.verbose):
        run_demo(work_dir=args.work_dir, epochs=args.epochs, num_cpus=args.num_cpus, quick=args.quick, verbose=args.verbose)
    return 0


def cmd_score(args) -> int:
    from vad.config import ScoreJobConfig, load_config
    from vad.scoring.job import run_scoring

    cfg = load_config(args.config, ScoreJobConfig, _overrides(args.set))
    with job_output(cfg.work_dir, "score", verbose=args.verbose):
        summary = run_scoring(cfg, run_date=args.date, verbose=args.verbose)
    print(json.dumps(summary.cli(), indent=2))
    return _exit_code("score", summary, "objects failed")


def _exit_code(command: str, summary, failed: str) -> int:
    """3, said on stderr, when more of a run's objects failed than `run.max_failure_rate` allows; else 0."""
    if not summary.failed:
        return 0
    print(
        f"vad {command}: {len(summary.errors)} of {summary.attempted} {failed} ({summary.failure_rate:.1%}), more than "
        f"run.max_failure_rate {summary.max_failure_rate:.1%}; see the errors table (vad query \"SELECT * FROM errors "
        f"WHERE run_id = '{summary.run_id}'\")",
        file=sys.stderr,
    )
    return 3


def cmd_fuse(args) -> int:
    from vad.config import FuseJobConfig, load_config
    from vad.fusion.job import run_fusion

    cfg = load_config(args.config, FuseJobConfig, _overrides(args.set))
    with job_output(cfg.work_dir, "fuse", verbose=args.verbose):
        summary = run_fusion(cfg, run_date=args.date, verbose=args.verbose)
    print(json.dumps({**summary.cli(), "model_name": summary.model_name, "model_version": summary.model_version,
                      "errors_by_stage": summary.errors_by_stage()}, indent=2))
    return _exit_code("fuse", summary, "videos could not be fused")


def cmd_calibrate(args) -> int:
    from vad.config import ScoreJobConfig, load_config
    from vad.fusion.calibrate import run_calibration

    cfg = load_config(args.config, ScoreJobConfig, _overrides(args.set))
    with job_output(cfg.work_dir, "calibrate", verbose=args.verbose):
        done = run_calibration(cfg, args.source, verbose=args.verbose)
    print(json.dumps([c.row() for c in done], indent=2))
    return 0


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


def cmd_train(args) -> int:
    from vad.config import TrainJobConfig, load_config
    from vad.training.job import run_training

    cfg = load_config(args.config, TrainJobConfig, _overrides(args.set))
    if cfg.train.per_camera:
        return _train_fleet(cfg, args.verbose)
    with job_output(cfg.work_dir, "train", verbose=args.verbose):
        summary = run_training(cfg, verbose=args.verbose)
    registered = summary.registered
    print(
        json.dumps(
            {
                "checkpoint": summary.checkpoint,
                "clips": summary.clips,
                "threshold": summary.result.threshold,
                **({"alert_budget": summary.budget.to_dict() | {"events_per_hour": summary.budget.events_per_hour}} if summary.budget else {}),
                "mlflow_run_id": summary.mlflow_run_id,
                "registered": f"models:/{registered.name}/{registered.version}" if registered else None,
                "promoted": registered.promoted if registered else False,
                "promotion": registered.reason if registered else "registry disabled or tracking off",
            },
            indent=2,
        )
    )
    return 0


def _train_fleet(cfg, verbose: bool) -> int:
    from vad.training.fleet import run_fleet_training

    with job_output(cfg.work_dir, "train", verbose=verbose):
        summary = run_fleet_training(cfg, verbose=verbose)
    print(summary.table())
    counts = {s: summary.count(s) for s in ("trained", "skipped", "failed")}
    print(json.dumps({"cameras": len(summary.rows), **counts, "resumed": len(summary.resumed),
                      "seconds": round(summary.seconds, 1), "mlflow_run_id": summary.mlflow_run_id}, indent=2))
    if counts["failed"]:
        print(f"vad train: {counts['failed']} camera(s) failed; run the same command again to train only those", file=sys.stderr)
        return 3
    return 0


def _storage(args):
    """Storage settings of a command that reads results: `--config`'s storage section (or the AWS
    chain), with `--endpoint-url` over it."""
    from vad.config import StorageConfig, load_storage

    storage = load_storage(args.config) if args.config else StorageConfig()
    return storage.model_copy(update={"endpoint_url": args.endpoint_url}) if args.endpoint_url else storage


class StorageUnreachable(RuntimeError):
    pass


def _unreadable(results: str, exc: OSError) -> StorageUnreachable:
    where = "" if not results.startswith("s3://") else (
        "; for MinIO or another S3-compatible store give --endpoint-url (or --config with storage.endpoint_url); "
        "credentials come from --config or the AWS chain"
    )
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return StorageUnreachable(f"cannot read {results}: {first}{where}")


def cmd_promote(args) -> int:
    from mlflow.exceptions import MlflowException

    from vad.config import MlflowConfig
    from vad.tracking.registry import promote
    from vad.tracking.runs import tracking_uri

    uri = args.tracking_uri or tracking_uri(MlflowConfig(), args.work_dir)
    try:
        before = promote(args.name, str(args.version), args.alias, uri)
    except MlflowException as exc:
        raise ValueError(f"cannot promote {args.name} version {args.version}: {exc.message}") from None
    print(f"models:/{args.name}@{args.alias} -> version {args.version}" + (f" (was version {before})" if before else ""))
    return 0


def cmd_query(args) -> int:
    import duckdb

    from vad.results.sql import format_table, run_query

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
    from vad.tracking.runs import tracking_uri

    storage = _storage(args)
    # MLflow: the given store, or the work folder's own if a job made one (none is created here)
    use_mlflow = not args.no_mlflow and (args.tracking_uri or args.mlflow_run_id or (Path(args.work_dir) / "mlflow.db").is_file())
    uri = args.tracking_uri or tracking_uri(MlflowConfig(), args.work_dir) if use_mlflow else None
    try:
        with job_output(args.work_dir, "report", verbose=args.verbose):  # Ray's and MLflow's logs to a file, as for the jobs
            summary = run_report(
                args.results, storage=storage, date=args.date, run_id=args.run_id, top_k=args.top, out_dir=args.out,
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vad", description="Score archived surveillance video for anomalies.")
    parser.add_argument("--version", action="version", version=f"vad {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true",
        help="show library and Ray logs on the console (otherwise they go to <work_dir>/logs/, printed at the end)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_jobs(sub)
    readers = _add_readers(sub)
    for reader in readers:
        reader.add_argument("--results", default="vad-work/demo/results", help="results root (folder or s3:// uri)")
        reader.add_argument("--config", default=None, help="a job YAML whose storage section (endpoint, credentials) reaches the results")
        reader.add_argument("--endpoint-url", default=None, help="S3 endpoint of the results, e.g. http://127.0.0.1:9000 for MinIO")
    return parser


def _add_jobs(sub) -> None:
    """The commands that run jobs: demo, score, train, fuse, calibrate, promote."""
    demo = sub.add_parser("demo", help="run everything on an embedded local S3 server, Ray and MLflow")
    demo.add_argument("--work-dir", default="vad-work")
    demo.add_argument("--epochs", type=int, default=25)
    demo.add_argument("--num-cpus", type=int, default=None)
    demo.add_argument("--quick", action="store_true", help="fewer videos and epochs (for smoke tests)")
    demo.set_defaults(func=cmd_demo)
    jobs = (("score", cmd_score, "run the nightly scoring job"), ("train", cmd_train, "train a scorer"),
            ("fuse", cmd_fuse, "fuse several models' scores of the same videos into one model's rows (after each has scored them)"))
    for name, func, text in jobs:
        p = sub.add_parser(name, help=text)
        p.add_argument("--config", required=True, help="job YAML file")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key, e.g. scorer.batch_size=32")
        if name in ("score", "fuse"):
            p.add_argument("--date", default=None, help=(
                "run date (yyyy-mm-dd) for videos whose key has none; default today" if name == "score"
                else "run date (yyyy-mm-dd) of the runs row, errors and manifest; default today"))
        p.set_defaults(func=func)
    calibrate = sub.add_parser("calibrate", help="record a calibration for models trained without one, from held-out normal videos")
    calibrate.add_argument("--config", required=True, help="the scoring job YAML of the model(s) (scorer.checkpoint; a fleet's template)")
    calibrate.add_argument("--source", required=True, help="held-out normal videos of the model's cameras (folder or s3:// uri)")
    calibrate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    calibrate.set_defaults(func=cmd_calibrate)

    promote = sub.add_parser("promote", help="point a registry alias (default @champion) at a model version by hand")
    promote.add_argument("name", help="registered model, e.g. vad-conv-ae")
    promote.add_argument("version", help="its version number")
    promote.add_argument("--alias", default="champion")
    promote.add_argument("--tracking-uri", default=None, help="MLflow tracking URI; default: the sqlite file in --work-dir")
    promote.add_argument("--work-dir", default="vad-work")
    promote.set_defaults(func=cmd_promote)


def _add_readers(sub) -> list:
    """The commands that read results: query, evaluate, feedback, report (each also takes --config/--endpoint-url)."""
    query = sub.add_parser("query", help="run SQL (DuckDB) over the results; views: scores, masks, objects, events, feedback, runs, errors, manifest, scores_regularity")
    query.add_argument("sql", help="the SQL statement, or - to read it from stdin")
    query.add_argument("--format", choices=["table", "csv", "json"], default="table")
    query.set_defaults(func=cmd_query)

    evaluate = sub.add_parser("evaluate", help="frame-level AUC/EER of a scoring run against frame labels, with plots")
    evaluate.add_argument("--labels", required=True, help="JSON {video key: [0/1 per frame]}, or 'ped2' (all 12 test videos), 'ped2:dev' (01-06), 'ped2:test' (07-12)")
    evaluate.add_argument("--run-id", default=None, help="scoring run (default: the latest)")
    evaluate.add_argument("--smoothing", type=int, default=1, help="moving-average window in frames")
    evaluate.add_argument(
        "--normalise", choices=["auto", "minmax", "regularity", "none"], default="none",
        help="per-video score scale: none (default: the scores as the nightly job compares them; the paper's figures are "
        "printed beside them), auto (the scorer's paper's: regularity for conv_ae/st_ae, minmax for pred/vgg_ae, none "
        "for mil and patch_knn), minmax, regularity (Hasan et al.: (e - min e) / max e)",
    )
    evaluate.add_argument("--plots", default=None, help="folder for roc.png and timelines.png")
    evaluate.add_argument(
        "--masks", default=None,
        help="pixel ground truth: a folder of <video key>.npy (T, H, W) arrays or <video key>/ folders of PNG frames; "
        "adds pixel precision/recall/F1 (beside all-ones and random-mask baselines) and pixel AUC",
    )
    evaluate.add_argument("--mlflow-run-id", default=None, help="log metrics and plots into this MLflow run")
    evaluate.add_argument("--tracking-uri", default=None)
    evaluate.set_defaults(func=cmd_evaluate)
    return [query, evaluate, *_add_answer_readers(sub)]


def _add_answer_readers(sub) -> list:
    """feedback and report: what operators answer and review."""
    feedback = sub.add_parser("feedback", help="record an operator's answer about an event: --normal (a false alarm) or --anomaly")
    feedback.add_argument("event_id", help="the event (events.event_id; printed on the review page)")
    answer = feedback.add_mutually_exclusive_group(required=True)
    answer.add_argument("--normal", action="store_true", help="a false alarm: train.use_feedback adds its footage to the camera's normal")
    answer.add_argument("--anomaly", action="store_true", help="a true anomaly: never added to a normal set")
    feedback.add_argument("--note", default=None, help="free text kept with the answer")
    feedback.add_argument("--operator", default=None, help="who answers (default: the OS user name)")
    feedback.set_defaults(func=cmd_feedback)
    report = sub.add_parser("report", help="the night's review page: summary, timelines, the top flagged clips with previews (HTML)")
    report.add_argument("--date", default=None, help="the night (yyyy-mm-dd); default: the latest with scores")
    report.add_argument("--run-id", default=None, help="only this scoring run's clips (default: each clip's latest score)")
    report.add_argument("--top", type=int, default=12, help="flagged clips shown with previews")
    report.add_argument("--out", default="vad-work/reports", help="folder of the page")
    report.add_argument("--mlflow-run-id", default=None, help="log the page into this MLflow run (default: the night's scoring run, if found)")
    report.add_argument("--tracking-uri", default=None, help="MLflow tracking URI; default: the sqlite file in --work-dir")
    report.add_argument("--work-dir", default="vad-work")
    report.add_argument("--no-mlflow", action="store_true", help="do not look for the scoring run in MLflow")
    report.set_defaults(func=cmd_report)
    return [report, feedback]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    from vad.cluster import ClusterError
    from vad.config import ConfigError

    try:
        return args.func(args)
    except (ConfigError, ClusterError, StorageUnreachable, FileNotFoundError, ValueError) as exc:
        print(f"vad {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
