"""The `vad` commands that run jobs: demo, score, train, fuse, calibrate, promote."""

from __future__ import annotations

import json
import sys

from vad.console import job_output


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


def cmd_promote(args) -> int:
    from mlflow.exceptions import MlflowException

    from vad.config import MlflowConfig
    from vad.tracking.registry import promote
    from vad.tracking.runs import local_store, tracking_uri

    store = local_store(args.work_dir)
    if not args.tracking_uri and not store.is_file():  # promote in the jobs' store, never in a new empty one
        raise FileNotFoundError(f"no MLflow store at {store}: give the --work-dir of the jobs that registered the model, or --tracking-uri")
    uri = args.tracking_uri or tracking_uri(MlflowConfig(), args.work_dir)
    try:
        before = promote(args.name, str(args.version), args.alias, uri)
    except MlflowException as exc:
        raise ValueError(f"cannot promote {args.name} version {args.version}: {exc.message}") from None
    print(f"models:/{args.name}@{args.alias} -> version {args.version}" + (f" (was version {before})" if before else ""))
    return 0
