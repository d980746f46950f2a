"""The `vad` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from vad import __version__


def _overrides(items: list[str]) -> dict:
    from vad.config import parse_override

    return dict(parse_override(item) for item in items)


def cmd_demo(args) -> int:
    from vad.demo import run_demo

    run_demo(work_dir=args.work_dir, epochs=args.epochs, num_cpus=args.num_cpus, quick=args.quick)
    return 0


def cmd_score(args) -> int:
    from vad.config import ScoreJobConfig, load_config
    from vad.scoring.job import run_scoring

    cfg = load_config(args.config, ScoreJobConfig, _overrides(args.set))
    summary = run_scoring(cfg, run_date=args.date)
    print(json.dumps(summary.cli(), indent=2))
    if summary.failed:
        print(
            f"vad score: {len(summary.errors)} of {summary.attempted} objects failed ({summary.failure_rate:.1%}), more than "
            f"run.max_failure_rate {summary.max_failure_rate:.1%}; see the errors table (vad query \"SELECT * FROM errors "
            f"WHERE run_id = '{summary.run_id}'\")",
            file=sys.stderr,
        )
        return 3
    return 0


def cmd_train(args) -> int:
    from vad.config import TrainJobConfig, load_config
    from vad.training.job import run_training

    cfg = load_config(args.config, TrainJobConfig, _overrides(args.set))
    summary = run_training(cfg)
    registered = summary.registered
    print(
        json.dumps(
            {
                "checkpoint": summary.checkpoint,
                "clips": summary.clips,
                "threshold": summary.result.threshold,
                "mlflow_run_id": summary.mlflow_run_id,
                "registered": f"models:/{registered.name}/{registered.version}" if registered else None,
                "promoted": registered.promoted if registered else False,
            },
            indent=2,
        )
    )
    return 0


def cmd_query(args) -> int:
    import duckdb

    from vad.results.sql import format_table, run_query

    sql = args.sql if args.sql != "-" else sys.stdin.read()
    try:
        columns, rows = run_query(args.results, sql)
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

    if spec == "ped2":
        from vad.datasets.ped2 import load_ped2

        return load_ped2().test_labels()
    with open(spec) as f:
        raw = json.load(f)
    if not isinstance(raw, dict):
        raise ValueError(f"{spec}: expected a JSON object mapping video key -> list of 0/1 frame labels")
    return {k: np.asarray(v, dtype=np.int8) for k, v in raw.items()}


def cmd_evaluate(args) -> int:
    from vad.evaluation.evaluate import evaluate_run, log_evaluation

    report = evaluate_run(
        args.results,
        _load_labels(args.labels),
        run_id=args.run_id,
        normalise=args.normalise,
        smoothing=args.smoothing,
        plots_dir=args.plots,
    )
    print(
        f"frame-level AUC  micro (all frames concatenated) {report['auc_micro']:.4f}   "
        f"macro (mean over videos) {report['auc_macro']:.4f}   EER {report['eer']:.4f}   "
        f"[{report['videos']} videos, {report['frames']} frames, "
        f"per-video normalisation {report['normalisation']}, smoothing {args.smoothing}]"
    )
    if report["missing_videos"]:
        print(f"labelled but not scored: {', '.join(report['missing_videos'])}")
    for plot in report.get("plots", []):
        print(f"plot: {plot}")
    if args.mlflow_run_id:
        import mlflow

        if args.tracking_uri:
            mlflow.set_tracking_uri(args.tracking_uri)
        log_evaluation(args.mlflow_run_id, report)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vad", description="Score archived surveillance video for anomalies.")
    parser.add_argument("--version", action="version", version=f"vad {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run everything on an embedded local S3 server, Ray and MLflow")
    demo.add_argument("--work-dir", default="vad-work")
    demo.add_argument("--epochs", type=int, default=25)
    demo.add_argument("--num-cpus", type=int, default=None)
    demo.add_argument("--quick", action="store_true", help="fewer videos and epochs (for smoke tests)")
    demo.set_defaults(func=cmd_demo)

    for name, func, text in (("score", cmd_score, "run the nightly scoring job"), ("train", cmd_train, "train a scorer")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--config", required=True, help="job YAML file")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key, e.g. scorer.batch_size=32")
        if name == "score":
            p.add_argument("--date", default=None, help="run date (yyyy-mm-dd) for videos whose key has none; default today")
        p.set_defaults(func=func)

    query = sub.add_parser("query", help="run SQL (DuckDB) over the results; views: scores, masks, runs, errors, manifest, scores_regularity")
    query.add_argument("sql", help="the SQL statement, or - to read it from stdin")
    query.add_argument("--results", default="vad-work/demo/results", help="results root (folder or s3:// uri)")
    query.add_argument("--format", choices=["table", "csv", "json"], default="table")
    query.set_defaults(func=cmd_query)

    evaluate = sub.add_parser("evaluate", help="frame-level AUC/EER of a scoring run against frame labels, with plots")
    evaluate.add_argument("--results", default="vad-work/demo/results", help="results root (folder or s3:// uri)")
    evaluate.add_argument("--labels", required=True, help="JSON {video key: [0/1 per frame]} or 'ped2'")
    evaluate.add_argument("--run-id", default=None, help="scoring run (default: the latest)")
    evaluate.add_argument("--smoothing", type=int, default=1, help="moving-average window in frames")
    evaluate.add_argument(
        "--normalise", choices=["auto", "minmax", "regularity", "none"], default="auto",
        help="per-video score scale: auto (default: the scorer's paper's; regularity for conv_ae/st_ae, minmax for "
        "pred/vgg_ae, none for mil), minmax, regularity (Hasan et al.: (e - min e) / max e), none",
    )
    evaluate.add_argument("--plots", default=None, help="folder for roc.png and timelines.png")
    evaluate.add_argument("--mlflow-run-id", default=None, help="log metrics and plots into this MLflow run")
    evaluate.add_argument("--tracking-uri", default=None)
    evaluate.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from vad.config import ConfigError

    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"vad {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
