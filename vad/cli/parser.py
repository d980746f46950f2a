"""The `vad` command line's arguments: one sub-command per job or reader, each bound to its function."""

from __future__ import annotations

import argparse

from vad import __version__
from vad.cli.jobs import cmd_calibrate, cmd_demo, cmd_fuse, cmd_promote, cmd_score, cmd_train
from vad.cli.readers import cmd_evaluate, cmd_feedback, cmd_query, cmd_report


def _date(text: str) -> str:
    """A `--date` as yyyy-mm-dd, refused by argparse (exit 2, usage shown) when it is not a calendar date."""
    import datetime as dt

    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (yyyy-mm-dd)") from None


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
            p.add_argument("--date", type=_date, default=None, help=(
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
    report.add_argument("--date", type=_date, default=None, help="the night (yyyy-mm-dd); default: the latest with scores")
    report.add_argument("--run-id", default=None, help="only this scoring run's clips (default: each camera's model's latest scores)")
    report.add_argument(
        "--model", default=None,
        help="show each camera by this model (its name as the scores record it; a fleet's without .<camera>, e.g. vad-objects); "
        "default: per camera, the model that scored it last",
    )
    report.add_argument("--top", type=int, default=12, help="events shown with previews, highest peak first")
    report.add_argument("--out", default="vad-work/reports", help="folder of the page")
    report.add_argument("--mlflow-run-id", default=None, help="log the page into this MLflow run (default: the night's scoring run, if found)")
    report.add_argument("--tracking-uri", default=None, help="MLflow tracking URI; default: the sqlite file in --work-dir")
    report.add_argument("--work-dir", default="vad-work")
    report.add_argument("--no-mlflow", action="store_true", help="do not look for the scoring run in MLflow")
    report.set_defaults(func=cmd_report)
    return [report, feedback]
