"""UCSD Ped2 benchmark: train each frame-level scorer on the 16 normal training videos, score the test
videos of one split, write what was measured to bench/results/ and print it.

    .venv/bin/python bench/ped2.py --split dev|test|all [--only conv_ae,pred] [--fast | --variant NAME] [--seeds 0,1,2]
                                   [--held-out 2] [--hparams JSON] [--epochs N] [--smoothing 1]
    .venv/bin/python bench/ped2.py --record [--only ...] [--fast]    # write the designs down (then commit)
    .venv/bin/python bench/ped2.py --split none --held-out 4         # pseudo-anomaly validation only

Variants: `full` (each scorer's benchmark settings), `fast` (the CI variant), and a scorer's own
ablations (e.g. `--variant detector_boxes` for `objects`), each a design of its own; a variant may set
its evaluation's smoothing (`--smoothing` overrides it).

Splits (`vad.datasets.ped2.SPLITS`): `dev` is test videos 01-06, read as often as needed to choose
designs and settings; `test` is 07-12 and `all` the 12 (papers' protocol, the development half
included). A run that reads 07-12 is refused unless its design (every setting, `ped2_harness.design`)
is recorded in bench/results/designs.json and that file is committed; each such run goes into
bench/results/test_runs.jsonl before anything is read, and a second one of the same design needs
`--again REASON`. An `all`
run also writes the `dev` and `test` records (one fit, the same scores).

Figures: frame-level micro AUC (all frames of the split's videos together), macro AUC (mean over the
videos holding both classes) and EER, with the scores as the scorer gives them (normalisation `none`,
what a nightly job sees) and with the per-video normalisation of the scorer's paper beside them
(regularity for conv_ae/st_ae, min-max for pred/vgg_ae; macro AUC is the same under both). Nothing is
selected on test videos: fixed epochs, the last weights, no thresholds. `--held-out N` keeps N training
videos out and reports their pseudo-anomaly AUC (split `val`). Needs ../shared/data/ucsd_ped2.tar.gz (or
VAD_DATA). CPU-only settings: inputs are downscaled.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench.*` when run as a script

from bench.ped2_harness import PED2_SETTINGS as SETTINGS  # noqa: E402
from bench.ped2_harness import ped2_smoothing  # noqa: E402
from bench.ped2_harness import BenchResult, benchmark_scorer, design, training_decodes  # noqa: E402
from bench.protocol import (  # noqa: E402
    DESIGNS_FILE, LEDGER_FILE, RESULTS_DIR, TEST_SPLITS, Design, ResultRecord, begin_test_run, end_test_run,
    ProtocolError, machine, record_design, today, write_record,
)
from bench.readme_tables import run_table  # noqa: E402
from vad.datasets.ped2 import split_videos  # noqa: E402


def records_of(d: Design, results: list[BenchResult], seeds: list[int], test_run: int, command: str) -> list[ResultRecord]:
    """One record per split the run scored (and `val` when training videos were held out)."""
    first = results[0]
    norms = tuple(dict.fromkeys(("none", first.normalisation)))
    per_seed = [r.reports(norms, d.settings["smoothing"]) for r in results]
    common = dict(
        benchmark=d.benchmark, scorer=d.scorer, variant=d.variant, design_digest=d.digest, settings=d.settings,
        seeds=list(seeds), normalisation="none", paper_normalisation=first.normalisation,
        fit_s=[round(r.train_s, 1) for r in results], train_clips=first.train_clips, date=today(), machine=machine(),
        command=command,
    )
    out = []
    for split in per_seed[0]:
        figures = {n: {m: [p[split][n][m] for p in per_seed] for m in ("auc_micro", "auc_macro", "eer")} for n in norms}
        videos = sorted(v for v in first.labels if v in split_videos(split))
        out.append(ResultRecord(
            **common, split=split, videos=videos, figures=figures, clips_per_s=[round(r.clips_per_s, 2) for r in results],
            scored_clips=first.test_clips, frames=per_seed[0][split][norms[0]]["frames"],
            test_run=test_run if split in TEST_SPLITS else 0,
        ))
    if first.val_pseudo:
        figures = {n: {m: [r.val_pseudo[n][m] for r in results] for m in ("auc_micro", "auc_macro", "eer")} for n in norms}
        out.append(ResultRecord(
            **common, split="val", videos=[f"{d.settings['train_videos']}: pseudo-anomalies"], figures=figures,
            frames=first.val_pseudo[norms[0]]["frames"],
        ))
    return out


def run(
    names: list[str], variant: str = "full", split: str | None = "dev", *, seeds: tuple[int, ...] = (0,),
    hparams_update: dict | None = None, epochs: int | None = None, held_out: int = 0, smoothing: int | None = None,
    again: str | None = None, designs: Path = DESIGNS_FILE, ledger: Path = LEDGER_FILE, results_dir: Path = RESULTS_DIR,
    require_committed: bool = True, ped2=None, command: str = "", write: bool = True,
) -> list[ResultRecord]:
    """Measure each scorer's design on `split` (None: the test folder is not read) and write the records.
    Every gate runs before anything is trained, so a refused scorer costs nothing."""
    plans = []
    for name in names:
        settings = SETTINGS[variant][name]
        hparams, decode, train_spec, default_epochs, lr = (
            settings.hparams, settings.decode, settings.train_strides, settings.epochs, settings.lr)
        hparams = {**hparams, **(hparams_update or {})}
        window = smoothing if smoothing is not None else ped2_smoothing(name, variant)
        d = design(name, variant, hparams, decode, train_spec, epochs=epochs or default_epochs, lr=lr,
                   smoothing=window, held_out=held_out)
        gate = (begin_test_run(d, split, again=again, designs=designs, ledger=ledger, require_committed=require_committed)
                if split in TEST_SPLITS else None)
        plans.append((name, hparams, decode, train_spec, epochs or default_epochs, lr, window, d, gate))
    records = []
    for name, hparams, decode, train_spec, n_epochs, lr, window, d, gate in plans:
        results = []
        for seed in seeds:
            t0 = time.perf_counter()
            result = benchmark_scorer(
                name, hparams, decode, training_decodes(decode, train_spec), epochs=n_epochs, lr=lr,
                held_out=held_out, smoothing=window, seed=seed, split=split, ped2=ped2,
            )
            print(f"# {name} seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
            results.append(result)
        run_records = records_of(d, results, list(seeds), gate["run"] if gate else 0, command)
        if gate:  # the ledger had the run from its start; now its figures, before they are shown
            end_test_run(gate, {f"{r.split}/{n}/{m}": r.mean(m, n) for r in run_records if r.split in TEST_SPLITS
                                for n in r.figures for m in ("auc_micro", "auc_macro", "eer")}, ledger)
        if write:
            for r in run_records:
                write_record(r, results_dir)
        records += run_records
        print(run_table(run_records), flush=True)
    return records


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=["dev", "test", "all", "none"], default="dev",
                        help="dev: videos 01-06 (default); test: 07-12; all: 12; none: pseudo-anomaly validation only")
    parser.add_argument("--only", default=",".join(SETTINGS["full"]))
    parser.add_argument("--fast", action="store_true", help="the small CI settings (--variant fast)")
    parser.add_argument("--variant", default=None, help=f"the settings to run: {', '.join(SETTINGS)} (default full)")
    parser.add_argument("--record", action="store_true", help="write the designs into bench/results/designs.json, run nothing")
    parser.add_argument("--note", default="", help="with --record: why this design")
    parser.add_argument("--again", default=None, help="the reason for a second test run of a design already tested")
    parser.add_argument("--hparams", type=json.loads, default=None, help='JSON merged into every scorer\'s hparams, e.g. \'{"score_patch": null}\'')
    parser.add_argument("--epochs", type=int, default=None, help="override the settings' epochs")
    parser.add_argument("--held-out", type=int, default=0, help="training videos kept for the pseudo-anomaly validation")
    parser.add_argument("--smoothing", type=int, default=None,
                        help="moving-average window over frame scores (1 = none; default: the settings', else 1)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds; several give mean ± spread")
    parser.add_argument("--no-write", action="store_true", help="print only; write no record")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    variant = args.variant or ("fast" if args.fast else "full")
    if variant not in SETTINGS:
        parser.error(f"--variant {variant}: not one of {', '.join(SETTINGS)}")
    names = args.only.split(",") if args.only != parser.get_default("only") or variant == "full" else list(SETTINGS[variant])
    missing = [n for n in names if n not in SETTINGS[variant]]
    if missing:
        parser.error(f"no {variant} settings for {', '.join(missing)}")
    if args.record:
        for name in names:
            settings = SETTINGS[variant][name]
            hparams, decode, train_spec, default_epochs, lr = (
                settings.hparams, settings.decode, settings.train_strides, settings.epochs, settings.lr)
            window = args.smoothing if args.smoothing is not None else ped2_smoothing(name, variant)
            d = design(name, variant, {**hparams, **(args.hparams or {})}, decode, train_spec,
                       epochs=args.epochs or default_epochs, lr=lr, smoothing=window, held_out=args.held_out)
            new = record_design(d, DESIGNS_FILE, args.note)
            print(f"{d.key} {d.digest}: {'recorded' if new else 'already recorded'}")
        print(f"commit {DESIGNS_FILE} before a test run")
        return
    split = None if args.split == "none" else args.split
    if split is None and not args.held_out:
        parser.error("--split none measures only the pseudo-anomaly validation: give --held-out N")
    command = "bench/ped2.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    try:
        run(names, variant, split, seeds=tuple(int(x) for x in args.seeds.split(",")), hparams_update=args.hparams,
            epochs=args.epochs, held_out=args.held_out, smoothing=args.smoothing, again=args.again, command=command,
            write=not args.no_write)
    except ProtocolError as e:
        parser.exit(2, f"refused: {e}\n")


if __name__ == "__main__":
    main()
