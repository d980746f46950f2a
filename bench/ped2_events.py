"""UCSD Ped2 judged as an operator would judge it: the events a nightly job raises (flagged clips merged,
`vad.results.events`) against the frame labels — event recall, false events per hour of normal footage,
mean delay (`vad.evaluation.metrics.event_report`) — at the two thresholds a model can carry: the quantile
of held-out normal clip scores (`train.threshold_quantile`) and a false-alarm budget of one event per
camera-hour (`alerts.max_false_per_hour`, `vad.results.events.budget_threshold`).

    .venv/bin/python bench/ped2_events.py --split dev     # development videos 01-06 (as often as needed)
    .venv/bin/python bench/ped2_events.py --record        # write the design down (then commit designs.json)
    .venv/bin/python bench/ped2_events.py --split all     # the one test run (07-12, and all 12 beside it)

The scorer is the object scorer at its recorded Ped2 design (`full`), fitted here on 12 of the 16 normal
training videos; the other 4 (seed 0) are the held-out normal footage both thresholds are set on (Ped2
has no more: about a minute at 10 fps, so the budget threshold is the top of what they scored, and
`vad train` would warn that it is a rough guess). Clip scores are the nightly job's (a clip's worst frame),
unsmoothed; clips are the design's (16 frames side by side). Writes bench/results/events_ped2/<split>.json.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench.*` when run as a script

from bench.ped2_fusion import member_design  # noqa: E402
from bench.ped2_harness import (  # noqa: E402
    PED2_SETTINGS, clips_with_times, data_files, split_training_videos, training_decodes, val_fraction,
)
from bench.protocol import (  # noqa: E402
    DESIGNS_FILE, RESULTS_DIR, TEST_SPLITS, Design, ProtocolError, begin_test_run, end_test_run, machine, record_design, today,
)
from vad.datasets.ped2 import SPLITS, load_ped2  # noqa: E402

SCORER, VARIANT = "objects", "full"
HELD_OUT_VIDEOS = 4  # of the 16 training videos, chosen by seed 0: the held-out normal footage of both thresholds
THRESHOLD_QUANTILE = 0.99  # train.threshold_quantile's default
MAX_FALSE_PER_HOUR = 1.0  # alerts.max_false_per_hour: one false event per camera-hour
MERGE_GAP_S = 2.0  # alerts.merge_gap_s's default
OUT = RESULTS_DIR / "events_ped2"  # not under ped2*/: those are ResultRecords (`load_records`)


def events_design() -> Design:
    settings = {
        "member": {"scorer": SCORER, "variant": VARIANT, "design": member_design(SCORER, VARIANT).digest},
        "held_out_videos": HELD_OUT_VIDEOS, "seed": 0, "threshold_quantile": THRESHOLD_QUANTILE,
        "max_false_per_hour": MAX_FALSE_PER_HOUR, "merge_gap_s": MERGE_GAP_S,
        "clip_score": "the clip's worst frame, unsmoothed (the nightly job's)", "fps": 10,
    }
    return Design("ped2_events", SCORER, VARIANT, settings)


def video_events(clips: dict, scores: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """The (first frame, last frame) of each event the video's clips raise at `threshold`."""
    from vad.results.events import merge_flagged

    groups = merge_flagged(clips["start_s"], clips["end_s"], scores > threshold, MERGE_GAP_S)
    return [(int(clips["start_frame"][g].min()), int(clips["end_frame"][g].max())) for g in groups]


def run(split: str) -> dict:
    """Fit, set both thresholds on the held-out videos, score `split`: {split: figures} for it and the splits inside it."""
    import torch

    from vad.evaluation.metrics import event_report, frame_level_report, frames_from_clips
    from vad.models.scorers import build_scorer, scorer_meta
    from vad.results.events import budget_threshold
    from vad.training.local import fit, score_clips_and_frames

    ped2 = load_ped2()
    settings = PED2_SETTINGS[VARIANT][SCORER]
    hparams, decode, train_spec, epochs, lr = (
        settings.hparams, settings.decode, settings.train_strides, settings.epochs, settings.lr)
    train_keys, held_keys = split_training_videos(ped2, HELD_OUT_VIDEOS, seed=0)
    train = np.concatenate([v["frames"] for d in training_decodes(decode, train_spec) for v in clips_with_times(ped2.train_dir, d, train_keys).values()])
    torch.manual_seed(0)
    model = build_scorer(SCORER, **scorer_meta(SCORER).hparams_for(decode.clip_len, data_files(hparams)))
    t0 = time.perf_counter()
    fit(model, train, epochs=epochs, batch_size=8, lr=lr, val_fraction=val_fraction(SCORER), seed=0)
    fit_s = time.perf_counter() - t0
    held = clips_with_times(ped2.train_dir, decode, held_keys)
    held_scores = {k: score_clips_and_frames(model, v["frames"], 8)[0] for k, v in held.items()}
    pooled = np.concatenate(list(held_scores.values()))
    budget = budget_threshold(pooled, np.concatenate([[k] * len(s) for k, s in held_scores.items()]),
                              np.concatenate([held[k]["start_s"] for k in held_scores]), np.concatenate([held[k]["end_s"] for k in held_scores]),
                              MAX_FALSE_PER_HOUR, MERGE_GAP_S)
    thresholds = {"quantile": float(np.quantile(pooled, THRESHOLD_QUANTILE)), "budget": budget.threshold}
    labels = ped2.test_labels(split)
    scored = clips_with_times(ped2.test_dir, decode, set(labels))
    clip_scores, frame_scores = {}, {}
    for key, clips in scored.items():
        clip_scores[key], frames = score_clips_and_frames(model, clips["frames"], 8)
        rows = [(s, decode.frame_step, f) for s, f in zip(clips["start_frame"], frames)]
        frame_scores[key] = frames_from_clips(len(labels[key]), rows, "mean")
    out = {}
    for sub in (s for s in SPLITS if set(SPLITS[s]) <= set(SPLITS[split])):
        videos = SPLITS[sub]
        auc = frame_level_report([labels[v] for v in videos], [frame_scores[v] for v in videos], "none", 1)
        figures = {"videos": list(videos), "frames": int(sum(len(labels[v]) for v in videos)), "auc_micro": auc["auc_micro"],
                   "normal_s": round(0.1 * float(sum((~np.asarray(labels[v]).astype(bool)).sum() for v in videos)), 1), "thresholds": {}}
        for name, threshold in thresholds.items():
            report = event_report([(labels[v], video_events(scored[v], clip_scores[v], threshold), 0.1) for v in videos])
            figures["thresholds"][name] = {"threshold": threshold, **{k: float(v) if isinstance(v, float) else v for k, v in report.items()}}
        out[sub] = figures
    held_hours = budget.held_out_hours
    for figures in out.values():
        figures |= {"held_out_videos": sorted(held_keys), "held_out_hours": held_hours, "held_out_clips": int(len(pooled)),
                    "held_out_events_at_budget": budget.events, "fit_s": round(fit_s, 1), "train_clips": int(len(train))}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=["dev", "test", "all"], default="dev")
    parser.add_argument("--record", action="store_true", help="write the design into bench/results/designs.json")
    parser.add_argument("--again", default=None, help="the reason for a second test run of the design")
    args = parser.parse_args(argv)
    d = events_design()
    if args.record:
        print(f"{d.key} {d.digest}: {'recorded' if record_design(d, DESIGNS_FILE, 'event metrics at the quantile and budget thresholds') else 'already recorded'}")
        return
    command = "bench/ped2_events.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    try:
        gate = begin_test_run(d, args.split, again=args.again) if args.split in TEST_SPLITS else None
    except ProtocolError as e:
        parser.exit(2, f"refused: {e}\n")
    figures = run(args.split)
    if gate:
        end_test_run(gate, {f"{s}/{t}/{m}": f["thresholds"][t][m] for s, f in figures.items() if s in TEST_SPLITS
                            for t in f["thresholds"] for m in ("event_recall", "false_events_per_hour", "mean_delay_s")})
    OUT.mkdir(parents=True, exist_ok=True)
    for sub, f in figures.items():
        record = {"benchmark": "ped2_events", "scorer": SCORER, "variant": VARIANT, "split": sub, "design_digest": d.digest,
                  "settings": d.settings, "test_run": gate["run"] if gate and sub in TEST_SPLITS else 0, "date": today(),
                  "machine": machine(), "command": command, **f}
        (OUT / f"{sub}.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        for name, t in f["thresholds"].items():
            print(f"{sub:4s} {name:8s} threshold {t['threshold']:.4g}: recall {t['event_recall']:.2f} ({t['segments_hit']}/{t['segments']}), "
                  f"{t['false_events']} false events ({t['false_events_per_hour']:.0f}/h of normal footage), delay {t['mean_delay_s']:.2f} s, "
                  f"{t['events']} events; frame AUC {100 * f['auc_micro']:.1f}")


if __name__ == "__main__":
    main()
