"""The demo's night judged by events at both thresholds a model can carry: the quantile of held-out normal
clip scores (`train.threshold_quantile`, what `vad demo` uses) and a false-alarm budget of one event per
camera-hour (`alerts.max_false_per_hour: 1`).

    .venv/bin/python bench/demo_events.py [--quick] [--work-dir vad-work/demo-events]

The demo's scene and Conv-AE settings (two cameras, `vad demo`'s decode, epochs and held-out share) from a
local folder instead of the loopback S3 server. One fleet is trained with the budget set
(`vad.training.fleet`: each camera's checkpoint records the budget threshold and, beside it, the quantile
threshold the same held-out scores give), the night is scored once (`vad.scoring.job`), and its clip scores
are cut into events at each camera's two thresholds (`vad.results.events.merge_flagged`, as the job does)
and judged against the injected anomalies (`vad.evaluation.metrics.event_report`: event recall, false
events per hour of normal footage, mean delay) over the 4 test videos and over every video of the night
(the normal training videos too). The same model and scores for both: only the threshold differs.
Writes bench/results/events_demo/<full|quick>.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.protocol import RESULTS_DIR, machine, today  # noqa: E402

OUT = RESULTS_DIR / "events_demo"


def judged(rows: list[tuple], labels: dict[str, np.ndarray], thresholds: dict[str, float], merge_gap_s: float) -> dict:
    """Event figures of the night's clip rows (video_uri, camera, start_frame, end_frame, start_s, end_s, score, frame scores,
    frame step) at each
    camera's threshold, for the videos in `labels` (keys matched as suffixes of the uris)."""
    from vad.evaluation.metrics import event_report, frame_level_report, frames_from_clips
    from vad.results.events import merge_flagged

    by_video: dict[str, list[tuple]] = {}
    for row in rows:
        by_video.setdefault(row[0], []).append(row)
    videos, ys, frame_scores = [], [], []
    for key, y in labels.items():
        [uri] = [u for u in by_video if u.endswith(key)]
        clips = sorted(by_video[uri], key=lambda r: r[4])
        start_s, end_s, score = (np.array([c[i] for c in clips], dtype=np.float64) for i in (4, 5, 6))
        groups = merge_flagged(start_s, end_s, score > thresholds[clips[0][1]], merge_gap_s)
        events = [(min(clips[i][2] for i in g), max(clips[i][3] for i in g)) for g in groups]
        videos.append((y, events, 1 / FPS))
        ys.append(y)
        frame_scores.append(frames_from_clips(len(y), [(c[2], c[8], np.asarray(c[7])) for c in clips], "mean"))
    report = event_report(videos)
    report["auc_micro"] = frame_level_report(ys, frame_scores, "none", 1)["auc_micro"]
    report["normal_s"] = round(float(sum((1 - y).sum() for y in ys)) / FPS, 1)
    return report


FPS = 25.0  # the synthetic scenes'


def main(argv: list[str] | None = None) -> int:
    from vad.config import (
        DecodeConfig, MlflowConfig, OutputConfig, RayConfig, ScoreJobConfig, ScorerConfig, SourceConfig, TrainAlertsConfig, TrainJobConfig,
        TrainLoopConfig, TrainModelConfig, TrainOutputConfig,
    )
    from vad.models.checkpoint import load_checkpoint
    from vad.results.sql import run_query
    from vad.scoring.job import run_scoring
    from vad.testing.synthetic import generate_dataset
    from vad.training.fleet import run_fleet_training

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the quick demo's scene and epochs")
    parser.add_argument("--work-dir", default="vad-work/demo-events")
    args = parser.parse_args(argv)
    work = Path(args.work_dir).resolve()
    shutil.rmtree(work, ignore_errors=True)
    videos = generate_dataset(work / "archive", cameras=2, train_per_camera=2 if args.quick else 3, test_per_camera=2,
                              num_frames=160 if args.quick else 240, distinct_views=True)
    every = {v.key: np.array(v.labels) for v in videos}  # every video of the night (the training ones all normal)
    tests = {k: y for k, y in every.items() if "/test_" in k}
    decode = DecodeConfig(clip_len=16, stride=8, resize=(64, 64), grayscale=True)
    run = work / "run"
    train = TrainJobConfig(
        source=SourceConfig(uri=str(work / "archive")), output=TrainOutputConfig(checkpoint=str(run / "models" / "{camera}.pt"), version="events"),
        model=TrainModelConfig(name="conv_ae", hparams={"widths": [64, 32, 16]}),
        train=TrainLoopConfig(epochs=3 if args.quick else 25, batch_size=16, lr=2e-3, key_regex=r"/train_", device="cpu", val_fraction=0.25,
                              per_camera=True, min_camera_clips=16),
        decode=decode.model_copy(update={"stride": 4}), alerts=TrainAlertsConfig(max_false_per_hour=1.0),
        mlflow=MlflowConfig(enabled=False), work_dir=str(run / "work"),
    )
    fleet = run_fleet_training(train)
    budgets = {r["camera"]: load_checkpoint(r["checkpoint"]).alert_budget for r in fleet.rows}
    score = ScoreJobConfig(
        source=train.source, output=OutputConfig(uri=str(run / "results")),
        scorer=ScorerConfig(name="conv_ae", checkpoint=train.output.checkpoint, batch_size=16, device="cpu"), decode=decode,
        ray=RayConfig(), mlflow=MlflowConfig(enabled=False), work_dir=str(run / "work"),
    )
    night = run_scoring(score)
    _, rows = run_query(str(run / "results"), "SELECT video_uri, camera, start_frame, end_frame, start_time_s, end_time_s, score, frame_scores, frame_step FROM scores "
                                              f"WHERE run_id = '{night.run_id}'")
    out = {"held_out_hours": {c: b["held_out_hours"] for c, b in budgets.items()}}
    for name, key in (("quantile", "quantile_threshold"), ("budget", "threshold")):
        thresholds = {c: float(b[key]) for c, b in budgets.items()}
        figures = {scope: judged(rows, labels, thresholds, train.alerts.merge_gap_s) for scope, labels in (("test videos", tests), ("every video", every))}
        out[name] = {"thresholds": thresholds, "figures": figures}
        for scope, f in figures.items():
            print(f"{name:8s} {scope:11s}: recall {f['event_recall']:.2f} ({f['segments_hit']}/{f['segments']}), {f['false_events']} false "
                  f"events in {f['normal_s']:.0f} s of normal footage ({f['false_events_per_hour']:.0f}/h), delay {f['mean_delay_s']:.2f} s, "
                  f"{f['events']} events; frame AUC {f['auc_micro']:.3f}", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": "demo_events", "variant": "quick" if args.quick else "full", "date": today(), "machine": machine(),
              "command": "bench/demo_events.py" + (" --quick" if args.quick else ""), "fps": FPS, **out}
    (OUT / f"{record['variant']}.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
