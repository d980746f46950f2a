"""UCSD Ped2 benchmark: train each frame-level scorer on the 16 normal training videos, score the
12 test videos, print one table (frame-level AUC micro/macro, EER, training time, scoring speed).

    .venv/bin/python bench/ped2.py [--only conv_ae,pred] [--fast] [--held-out 2 [--no-test]] [--hparams JSON] [--epochs N] [--smoothing 1]

Nothing is selected on the test set: fixed epochs, the last weights, no thresholds (AUC/EER are
threshold-free). `--held-out N` keeps N training videos out of training and reports their
pseudo-anomaly AUC (`vad.validation`), for comparing settings without test labels (`--no-test` never
reads the test videos). Scores
are normalised per video (min-max), as in the papers. Needs ../shared/data/ucsd_ped2.tar.gz (or
VAD_DATA). CPU-only settings: inputs are downscaled.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from vad.datasets.ped2 import PED2_SETTINGS as SETTINGS
from vad.datasets.ped2 import benchmark_scorer, training_decodes



def run(
    names: list[str], mode: str = "full", test: bool = True, hparams_update: dict | None = None,
    epochs: int | None = None, held_out: int = 0, smoothing: int = 1,
) -> list:
    results = []
    for name in names:
        hparams, decode, train_spec, default_epochs, lr = SETTINGS[mode][name]
        t0 = time.perf_counter()
        result = benchmark_scorer(
            name, {**hparams, **(hparams_update or {})}, decode, training_decodes(decode, train_spec),
            epochs=epochs or default_epochs, lr=lr, test=test, held_out=held_out, smoothing=smoothing,
        )
        print(json.dumps({**result.__dict__, "wall_s": round(time.perf_counter() - t0, 1)}), flush=True)
        results.append(result)
    return results


def table(results) -> str:
    lines = [
        "| scorer | micro AUC | macro AUC | EER | training (s) | scoring clips/s | val pseudo-AUC |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.scorer} | {100 * r.auc_micro:.1f} | {100 * r.auc_macro:.1f} | {100 * r.eer:.1f} | {r.train_s:.0f} "
            f"| {r.clips_per_s:.1f} | {100 * r.val_pseudo_auc:.1f} |"
        )
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
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    mode = "fast" if args.fast else "full"
    print(table(run(args.only.split(","), mode, not args.no_test, args.hparams, args.epochs, args.held_out, args.smoothing)))
