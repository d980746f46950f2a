"""UCSD Ped2 benchmark: train each frame-level scorer on the 16 normal training videos, score the
12 test videos, print one table (frame-level AUC micro/macro, EER, training time, scoring speed).

    .venv/bin/python bench/ped2.py [--only conv_ae,pred] [--fast] [--seeds 0,1,2] [--held-out 2 [--no-test]]
                                   [--hparams JSON] [--epochs N] [--smoothing 1]

Nothing is selected on the test set: fixed epochs, the last weights, no thresholds (AUC/EER are
threshold-free). `--held-out N` keeps N training videos out of training and reports their
pseudo-anomaly AUC (`vad.evaluation.pseudo_anomalies`), for comparing settings without test labels (`--no-test` never
reads the test videos). Scores
are normalised per video as each scorer's paper does (regularity score for conv_ae and st_ae, min-max
for pred and vgg_ae; `vad.models.scorers.evaluation_normalisation`). Needs ../shared/data/ucsd_ped2.tar.gz (or
VAD_DATA). CPU-only settings: inputs are downscaled.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from ped2_harness import PED2_SETTINGS as SETTINGS
from ped2_harness import benchmark_scorer, training_decodes


def run(
    names: list[str], mode: str = "full", test: bool = True, hparams_update: dict | None = None,
    epochs: int | None = None, held_out: int = 0, smoothing: int = 1, seeds: tuple[int, ...] = (0,),
) -> list[list]:
    """One list of results per scorer, one result per seed (initial weights, batch order, held-out videos)."""
    results = []
    for name in names:
        hparams, decode, train_spec, default_epochs, lr = SETTINGS[mode][name]
        per_seed = []
        for seed in seeds:
            t0 = time.perf_counter()
            result = benchmark_scorer(
                name, {**hparams, **(hparams_update or {})}, decode, training_decodes(decode, train_spec),
                epochs=epochs or default_epochs, lr=lr, test=test, held_out=held_out, smoothing=smoothing, seed=seed,
            )
            print(json.dumps({**result.__dict__, "seed": seed, "wall_s": round(time.perf_counter() - t0, 1)}), flush=True)
            per_seed.append(result)
        results.append(per_seed)
    return results


def _cell(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    """One value, or mean ± standard deviation over seeds."""
    v = np.asarray(values, dtype=float) * scale
    if np.isnan(v).all():
        return "–"
    return f"{v[0]:.{digits}f}" if len(v) == 1 else f"{v.mean():.{digits}f} ± {v.std():.{digits}f}"


def table(results: list[list]) -> str:
    lines = [
        "| scorer | normalisation | seeds | micro AUC | macro AUC | EER | training (s) | scoring clips/s | val pseudo-AUC |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for per_seed in results:
        r = per_seed[0]
        lines.append(
            f"| {r.scorer} | {r.normalisation} | {len(per_seed)} | {_cell([x.auc_micro for x in per_seed])} "
            f"| {_cell([x.auc_macro for x in per_seed])} | {_cell([x.eer for x in per_seed])} "
            f"| {np.mean([x.train_s for x in per_seed]):.0f} | {np.mean([x.clips_per_s for x in per_seed]):.1f} "
            f"| {_cell([x.val_pseudo_auc for x in per_seed])} |"
        )
    if any(len(per_seed) > 1 for per_seed in results):
        tested = not np.isnan(results[0][0].auc_micro)
        lines.append(f"\n(mean ± standard deviation over seeds; per seed, {'micro AUC' if tested else 'val pseudo-AUC'}: " + "; ".join(
            f"{p[0].scorer} " + ", ".join(f"{100 * (x.auc_micro if tested else x.val_pseudo_auc):.1f}" for x in p)
            for p in results) + ")")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SETTINGS["full"]))
    parser.add_argument("--fast", action="store_true", help="the small CI settings")
    parser.add_argument("--no-test", action="store_true", help="validation only: the test videos are not read")
    parser.add_argument("--hparams", type=json.loads, default=None, help='JSON merged into every scorer\'s hparams, e.g. \'{"score_patch": null}\'')
    parser.add_argument("--epochs", type=int, default=None, help="override the settings' epochs")
    parser.add_argument("--held-out", type=int, default=0, help="training videos kept for the pseudo-anomaly validation")
    parser.add_argument("--smoothing", type=int, default=1, help="moving-average window over frame scores (1 = none)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds; several give mean ± spread")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    mode = "fast" if args.fast else "full"
    print(table(run(args.only.split(","), mode, not args.no_test, args.hparams, args.epochs, args.held_out, args.smoothing,
                    tuple(int(x) for x in args.seeds.split(",")))))
