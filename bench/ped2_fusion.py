"""UCSD Ped2, fused models: members trained on the 16 normal training videos (each by its own recorded
Ped2 design), each calibrated on its held-out training clips (`vad.models.calibration`, as `vad train`
records it), fused frame by frame by `vad.fusion.rules` (what `vad fuse` runs on the nightly rows).

    .venv/bin/python bench/ped2_fusion.py --study                  # development videos 01-06 only: every pair, rule, weight
    .venv/bin/python bench/ped2_fusion.py --record NAME            # write the chosen design down (then commit)
    .venv/bin/python bench/ped2_fusion.py --split all --design NAME # the one test run: fused and each member alone

The study caches each member's development-set scores and calibration (~/.cache/vad/fusion_study) so the
rules can be compared without refitting. A design names its members (scorer, Ped2 variant, weight), the
rule and the smoothing of the fused frame scores; its test run refits the members (the same seeds) and
reports each member alone beside the fusion, scores as given (normalisation `none`: what a nightly job sees).
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench.*` when run as a script

from bench.ped2_harness import PED2_SETTINGS, benchmark_scorer, design, ped2_smoothing, split_reports, training_decodes  # noqa: E402
from bench.protocol import (  # noqa: E402
    DESIGNS_FILE, TEST_SPLITS, Design, ProtocolError, ResultRecord, begin_test_run, end_test_run, machine, record_design, today,
    write_record,
)
from vad.datasets.ped2 import split_videos  # noqa: E402
from vad.fusion.rules import Member, fuse_frames  # noqa: E402
from vad.models.calibration import Calibration  # noqa: E402
from vad.results.frames import fill_gaps  # noqa: E402

CACHE = Path.home() / ".cache" / "vad" / "fusion_study"
CANDIDATES = (("objects", "full"), ("pred", "fast"), ("conv_ae", "fast"), ("vgg_ae", "fast"), ("st_ae", "fast"))

# Designs chosen on 01-06 (`--study`), recorded before their one test run: members (scorer, variant, weight), rule, smoothing.
DESIGNS = {
    # 01-06 (--study, 2026-11-29): objects alone 98.1 (smoothed 9); with pred (fast) summed 98.3, weights 0.5 and 1 tied,
    # smoothing 9 over 1 (97.3); every pair with objects 97.5-98.3, triples no better; the dev set is near its ceiling
    "objects+pred": {"members": [("objects", "full", 1.0), ("pred", "fast", 1.0)], "rule": "sum", "smoothing": 9},
}


def member_design(name: str, variant: str) -> Design:
    settings = PED2_SETTINGS[variant][name]
    hparams, decode, train_spec, epochs, lr = (
        settings.hparams, settings.decode, settings.train_strides, settings.epochs, settings.lr)
    return design(name, variant, hparams, decode, train_spec, epochs=epochs, lr=lr, smoothing=ped2_smoothing(name, variant))


def fusion_design(name: str) -> Design:
    spec = DESIGNS[name]
    members = [{"scorer": s, "variant": v, "weight": w, "design": member_design(s, v).digest} for s, v, w in spec["members"]]
    settings = {"members": members, "rule": spec["rule"], "smoothing": spec["smoothing"],
                "calibration": "each member's held-out training clips (fit's val_fraction): min -> 0, 99.9th percentile -> 1",
                "frame_scores": "each member: mean over the clips holding the frame, gaps interpolated; then fused"}
    return Design("ped2_fusion", "fusion", name, settings)


def fit_member(name: str, variant: str, split: str):
    """A member fitted on the training videos and scoring `split`: (scores per video, labels, calibration, fit seconds)."""
    settings = PED2_SETTINGS[variant][name]
    hparams, decode, train_spec, epochs, lr = (
        settings.hparams, settings.decode, settings.train_strides, settings.epochs, settings.lr)
    result = benchmark_scorer(name, hparams, decode, training_decodes(decode, train_spec), epochs=epochs, lr=lr, split=split)
    scores = {v: fill_gaps(s) for v, s in result.scores.items()}
    return scores, result.labels, result.calibration, result.train_s


def cached_member(name: str, variant: str) -> tuple[dict, dict, Calibration]:
    """Development-set scores of a member, fitted once and cached."""
    path = CACHE / f"{name}-{variant}-{member_design(name, variant).digest}-dev.json"
    if not path.is_file():
        t0 = time.perf_counter()
        scores, labels, cal, _ = fit_member(name, variant, "dev")
        CACHE.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"scores": {v: s.tolist() for v, s in scores.items()},
                                    "labels": {v: np.asarray(y).astype(int).tolist() for v, y in labels.items()},
                                    "calibration": cal.to_dict()}))
        print(f"# {name}/{variant}: fitted and scored 01-06 in {time.perf_counter() - t0:.0f} s", flush=True)
    data = json.loads(path.read_text())
    return ({v: np.array(s) for v, s in data["scores"].items()}, {v: np.array(y) for v, y in data["labels"].items()},
            Calibration.from_dict(data["calibration"]))


def fused_scores(members: list[tuple[dict, Calibration, float]], rule: str) -> dict:
    videos = members[0][0].keys()
    roles = [Member(str(i), str(i), "-", cal, w) for i, (_, cal, w) in enumerate(members)]
    return {v: fuse_frames([m[0][v] for m in members], roles, rule)[0] for v in videos}


def report(labels: dict, scores: dict, split: str, smoothing: int) -> dict:
    return split_reports(labels, scores, split, ("none",), smoothing)


def study() -> None:
    """Every candidate alone, every pair and the triples with objects, sum and max, weights 0.5/1/2 on the second
    member, smoothing 1 or the object scorer's: micro AUC on 01-06 (nothing else is read)."""
    members = {f"{n}/{v}": cached_member(n, v) for n, v in CANDIDATES}
    labels = next(iter(members.values()))[1]
    rows = []
    for key, (scores, _, cal) in members.items():
        for smoothing in (1, 9):
            rows.append((report(labels, {v: cal.scale(s) for v, s in scores.items()}, "dev", smoothing)["dev"]["none"]["auc_micro"],
                         key, "alone", 1.0, smoothing))
    keys = list(members)
    for size in (2, 3):
        for combo in itertools.combinations(keys, size):
            for rule in ("sum", "max"):
                for weight in ((0.5, 1.0, 2.0) if size == 2 else (1.0,)):
                    chosen = [(members[k][0], members[k][2], weight if i == 1 else 1.0) for i, k in enumerate(combo)]
                    fused = fused_scores(chosen, rule)
                    for smoothing in (1, 9):
                        auc = report(labels, fused, "dev", smoothing)["dev"]["none"]["auc_micro"]
                        rows.append((auc, "+".join(combo), rule, weight, smoothing))
    rows.sort(key=lambda r: -r[0])
    print("| dev 01-06 micro AUC | members | rule | weight of the 2nd | smoothing |\n|---|---|---|---|---|")
    for auc, combo, rule, weight, smoothing in rows:
        print(f"| {100 * auc:.1f} | {combo} | {rule} | {weight:g} | {smoothing} |")


def test_run(name: str, split: str, again: str | None, command: str) -> None:
    d = fusion_design(name)
    spec = DESIGNS[name]
    gate = begin_test_run(d, split, again=again) if split in TEST_SPLITS else None
    fitted = []
    for scorer, variant, weight in spec["members"]:
        t0 = time.perf_counter()
        scores, labels, cal, fit_s = fit_member(scorer, variant, split)
        print(f"# {scorer}/{variant}: {time.perf_counter() - t0:.0f} s", flush=True)
        fitted.append((scorer, variant, weight, scores, labels, cal, fit_s))
    labels = fitted[0][4]
    fused = fused_scores([(f[3], f[5], f[2]) for f in fitted], spec["rule"])
    runs = [("fusion", name, fused, spec["smoothing"], [f[6] for f in fitted])]
    runs += [(f[0], f"{f[1]}.alone", {v: f[5].scale(s) for v, s in f[3].items()}, ped2_smoothing(f[0], f[1]), [f[6]]) for f in fitted]
    records = []
    for scorer, variant, scores, smoothing, fit_s in runs:
        for sub, figures in report(labels, scores, split, smoothing).items():
            videos = sorted(v for v in labels if v in split_videos(sub))
            records.append(ResultRecord(
                benchmark="ped2_fusion", scorer=scorer, variant=variant, split=sub, design_digest=d.digest, settings=d.settings,
                videos=videos, seeds=[0], figures={"none": {m: [figures["none"][m]] for m in ("auc_micro", "auc_macro", "eer")}},
                fit_s=[round(sum(fit_s), 1)], frames=figures["none"]["frames"], test_run=gate["run"] if gate and sub in TEST_SPLITS else 0,
                date=today(), machine=machine(), command=command,
                note="" if scorer == "fusion" else f"{scorer} alone, calibrated, from the fusion run's own fit",
            ))
    if gate:
        end_test_run(gate, {f"{r.split}/{r.scorer}/{m}": r.mean(m) for r in records if r.split in TEST_SPLITS
                            for m in ("auc_micro", "auc_macro", "eer")})
    for r in records:
        write_record(r)
        print(f"{r.scorer:8s} {r.variant:14s} {r.split:4s} micro {100 * r.mean('auc_micro'):.1f}  macro {100 * r.mean('auc_macro'):.1f}  "
              f"EER {100 * r.mean('eer'):.1f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", action="store_true", help="compare members and rules on 01-06 (cached fits)")
    parser.add_argument("--record", default=None, metavar="NAME", help="write DESIGNS[NAME] into bench/results/designs.json")
    parser.add_argument("--design", default=None, help="the design to run (a key of DESIGNS)")
    parser.add_argument("--split", choices=["dev", "test", "all"], default="dev")
    parser.add_argument("--again", default=None, help="the reason for a second test run of a design already tested")
    args = parser.parse_args(argv)
    if args.study:
        study()
        return
    if args.record:
        d = fusion_design(args.record)
        print(f"{d.key} {d.digest}: {'recorded' if record_design(d, DESIGNS_FILE, 'chosen on 01-06 with --study') else 'already recorded'}")
        return
    if not args.design:
        parser.error("give --study, --record NAME or --design NAME")
    command = "bench/ped2_fusion.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    try:
        test_run(args.design, args.split, args.again, command)
    except ProtocolError as e:
        parser.exit(2, f"refused: {e}\n")


if __name__ == "__main__":
    main()
