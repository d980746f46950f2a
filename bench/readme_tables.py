"""The README's accuracy tables, made from the measurements in bench/results/ (never typed by hand).

    .venv/bin/python bench/readme_tables.py            # rewrite the tables in README.md
    .venv/bin/python bench/readme_tables.py --check    # exit 1 when README.md differs from the results

Each table sits in README.md between `<!-- results:NAME -->` and `<!-- /results -->`. A table shows the
newest recorded design of each scorer (bench/results/designs.json) and only records of that design, so
a figure always has its settings and its split behind it. Published figures come from
bench/results/published.json, with their source and where their protocol differs.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench.*` when run as a script

from bench.protocol import DESIGNS_FILE, LEDGER_FILE, RESULTS_DIR, ResultRecord, begun_runs, current_digest, load_pixel_records, load_records  # noqa: E402

README = Path(__file__).resolve().parents[1] / "README.md"
PUBLISHED_FILE = RESULTS_DIR / "published.json"
SPLIT_TITLES = {"dev": "dev 01–06", "test": "test 07–12", "all": "all 12", "val": "pseudo-anomaly val"}
MARKER = re.compile(r"(<!-- results:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /results -->)", re.S)


def cell(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    """One figure, or mean ± standard deviation (population) over seeds; – when there is none."""
    v = [x * scale for x in values if x is not None and not math.isnan(x)]
    if not v:
        return "–"
    return f"{v[0]:.{digits}f}" if len(v) == 1 else f"{statistics.fmean(v):.{digits}f} ± {statistics.pstdev(v):.{digits}f}"


def seconds(values: list[float]) -> str:
    v = [x for x in values if x is not None and not math.isnan(x)]
    return f"{statistics.fmean(v):.0f}" if v else "–"


def rate(values: list[float]) -> str:
    v = [x for x in values if x is not None and not math.isnan(x)]
    return f"{statistics.fmean(v):.1f}" if v else "–"


def describe(settings: dict) -> str:
    """A design's settings in a few words: input, schedule, the main hyper-parameters."""
    d = settings.get("decode") or {}
    hp = settings.get("hparams") or {}
    parts = []
    if d.get("resize"):
        parts.append(f"{d.get('clip_len', '?')}×{d['resize'][0]}×{d['resize'][1]}")
    for key in ("widths", "layer", "bank_size", "attributes", "every"):
        if key in hp and (key != "bank_size" or "layer" in hp):  # the object scorer's bank is a detail
            value = hp[key]
            parts.append(f"{key} {'/'.join(map(str, value)) if isinstance(value, list) else value}")
    if "size" in settings:
        parts.append(f"{settings['size']}×{settings['size']} I3D")
    if settings.get("epochs") and "bank_size" not in hp:
        parts.append(f"{settings['epochs']} epochs")
    return ", ".join(parts)


def run_table(records: list[ResultRecord]) -> str:
    """What one benchmark run measured, for the terminal: a line per record and normalisation."""
    lines = [
        "| scorer | variant | split | normalisation | seeds | micro AUC | macro AUC | EER | fit (s) | clips/s | test run |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        for norm in r.figures:
            f = r.figures[norm]
            lines.append(
                f"| {r.scorer} | {r.variant} | {SPLIT_TITLES[r.split]} | {norm} | {len(r.seeds)} | {cell(f['auc_micro'])} "
                f"| {cell(f['auc_macro'])} | {cell(f['eer'])} | {seconds(r.fit_s)} | {rate(r.clips_per_s)} | {r.test_run or '–'} |"
            )
    return "\n".join(lines)


def _current(records: list[ResultRecord], designs: Path) -> dict[tuple[str, str], ResultRecord]:
    """(design key, split) -> the record of the design key's newest recorded design."""
    out = {}
    for r in records:
        if r.design_digest == current_digest(r.key, designs):
            out[(r.key, r.split)] = r
    return out


def _test_runs(ledger: Path) -> dict[tuple[str, str], int]:
    """(design key, digest) -> how many test runs it had (`protocol.previous_test_runs`' rule)."""
    counts: dict[tuple[str, str], int] = {}
    for row in begun_runs(ledger):
        counts[(row["design"], row["digest"])] = counts.get((row["design"], row["digest"]), 0) + 1
    return counts


def frame_table(benchmark: str, variant: str, records, designs: Path, ledger: Path, published: dict) -> str:
    """Ped2 frame-level scorers: the test half as the headline, all 12 and dev beside it, each scorer
    under its raw scores ('none') and, where its paper normalises per video, under that too."""
    current = _current(records, designs)
    runs = _test_runs(ledger)
    def order(key: str) -> tuple:
        test = current.get((key, "test"))
        micro = test.mean("auc_micro") if test else math.nan
        return (math.isnan(micro), 0 if math.isnan(micro) else -micro, key)

    keys = sorted({k for k, _ in current if k.startswith(f"{benchmark}/") and k.endswith(f"/{variant}")}, key=order)
    head = ("| scorer | settings | normalisation | seeds | **test 07–12** micro AUC | macro AUC | EER "
            "| all 12: micro AUC | macro AUC | EER | dev 01–06: micro AUC | fit (s) | clips/s |")
    lines = [head + (" published, all 12 |" if published else ""), "|---" * (head.count("|") - 1 + bool(published)) + "|"]
    for key in keys:
        scorer = key.split("/")[1]
        test, every, dev = (current.get((key, s)) for s in ("test", "all", "dev"))
        anyone = test or every or dev
        norms = list(dict.fromkeys([anyone.normalisation, anyone.paper_normalisation]))
        for i, norm in enumerate(norms):
            def fig(r, metric, norm=norm):
                return cell(r.figures[norm][metric]) if r and norm in r.figures else "–"

            tested = runs.get((key, anyone.design_digest), 0)
            name = f"{scorer}" + (f" (tested {tested}×)" if tested > 1 else "") if i == 0 else ""
            label = norm + (" (paper)" if norm == anyone.paper_normalisation and norm != anyone.normalisation else "")
            pub = published.get(scorer, {}) if i == len(norms) - 1 else {}
            lines.append(
                f"| {name} | {describe(anyone.settings) if i == 0 else ''} | {label} | {len(anyone.seeds)} "
                f"| **{fig(test, 'auc_micro')}** | {fig(test, 'auc_macro')} | {fig(test, 'eer')} "
                f"| {fig(every, 'auc_micro')} | {fig(every, 'auc_macro')} | {fig(every, 'eer')} | {fig(dev, 'auc_micro')} "
                f"| {seconds(anyone.fit_s) if i == 0 else ''} | {rate((test or every or dev).clips_per_s) if i == 0 else ''} |"
                + (f" {_published(pub)} |" if published else "")
            )
    return "\n".join(lines)


def ablation_table(benchmark: str, scorer: str, records, designs: Path, ledger: Path) -> str:
    """One scorer's Ped2 variants beside its full design: what each changes and what it measured (its
    scores as given, `none`); a variant without records yet is left out."""
    current = _current(records, designs)
    runs = _test_runs(ledger)
    variants = sorted({k.split("/")[2] for k, _ in current if k.startswith(f"{benchmark}/{scorer}/") and not k.endswith("/fast")},
                      key=lambda v: (v != "full", v))
    lines = ["| variant | changes | **test 07–12** micro AUC | macro AUC | EER | all 12: micro AUC | dev 01–06: micro AUC | fit (s) | clips/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    base = next((current.get((f"{benchmark}/{scorer}/full", s)) for s in ("test", "all", "dev") if current.get((f"{benchmark}/{scorer}/full", s))), None)
    for variant in variants:
        key = f"{benchmark}/{scorer}/{variant}"
        test, every, dev = (current.get((key, s)) for s in ("test", "all", "dev"))
        anyone = test or every or dev

        def fig(r, metric):
            return cell(r.figures[r.normalisation][metric]) if r else "–"

        tested = runs.get((key, anyone.design_digest), 0)
        name = f"{variant}" + (f" (tested {tested}×)" if tested > 1 else "")
        lines.append(
            f"| {name} | {changes(base.settings if base else {}, anyone.settings) if variant != 'full' else 'the design'} "
            f"| **{fig(test, 'auc_micro')}** | {fig(test, 'auc_macro')} | {fig(test, 'eer')} | {fig(every, 'auc_micro')} "
            f"| {fig(dev, 'auc_micro')} | {seconds(anyone.fit_s)} | {rate((test or every or dev).clips_per_s)} |"
        )
    return "\n".join(lines)


def fusion_table(records, designs: Path, ledger: Path, published: dict) -> str:
    """Each recorded fusion design's run: the fused model, then each member alone from the same fits (their
    records share the fusion design's digest), scores as given (`none`)."""
    runs = _test_runs(ledger)
    lines = ["| model | members, rule | **test 07–12** micro AUC | macro AUC | EER | all 12: micro AUC | macro AUC | EER "
             "| dev 01–06: micro AUC | fit (s) | published, all 12 |", "|---" * 11 + "|"]
    fusions = sorted({r.key for r in records if r.benchmark == "ped2_fusion" and r.scorer == "fusion"})
    for key in fusions:
        wanted = current_digest(key, designs)
        mine = [r for r in records if r.benchmark == "ped2_fusion" and r.design_digest == wanted]
        if not mine:
            continue
        tested = runs.get((key, wanted), 0)
        for scorer in dict.fromkeys(["fusion", *(r.scorer for r in mine)]):
            test, every, dev = (next((r for r in mine if r.scorer == scorer and r.split == s), None) for s in ("test", "all", "dev"))
            anyone = test or every or dev
            if anyone is None:
                continue

            def fig(r, metric):
                return cell(r.figures[r.normalisation][metric]) if r else "–"

            if scorer == "fusion":
                spec = anyone.settings
                what = " + ".join(f"{m['scorer']} ({m['variant']}, ×{m['weight']:g})" for m in spec["members"])
                what += f", {spec['rule']}, smoothing {spec['smoothing']}"
                name = f"**fusion** {anyone.variant}" + (f" (tested {tested}×)" if tested > 1 else "")
            else:
                what, name = "alone, the same fit, calibrated", f"{scorer} ({anyone.variant.split('.')[0]})"
            pub = published.get("fusion" if scorer == "fusion" else scorer, {})
            lines.append(
                f"| {name} | {what} | **{fig(test, 'auc_micro')}** | {fig(test, 'auc_macro')} | {fig(test, 'eer')} "
                f"| {fig(every, 'auc_micro')} | {fig(every, 'auc_macro')} | {fig(every, 'eer')} | {fig(dev, 'auc_micro')} "
                f"| {seconds(anyone.fit_s)} | {_published(pub)} |"
            )
    return "\n".join(lines)


def changes(base: dict, other: dict) -> str:
    """The settings `other` changes from `base`, as `name value` (hparams and the evaluation's smoothing)."""
    hp, hp0 = other.get("hparams") or {}, base.get("hparams") or {}
    diff = [f"{k} {'/'.join(map(str, v)) if isinstance(v, list) else v}" for k, v in hp.items() if hp0.get(k) != v]
    if other.get("smoothing") != base.get("smoothing"):
        diff.append(f"smoothing {other.get('smoothing')}")
    return ", ".join(diff) or "–"


def mil_table(records, designs: Path, ledger: Path, published: dict) -> str:
    """The MIL ranker on its weak splits: each split's anomalous training videos come from inside it."""
    current = _current(records, designs)
    lines = [
        "| split | trained on (weak labels) | scored | seeds | micro AUC | macro AUC | EER | published |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted({k for k, _ in current if k.startswith("ped2_mil/")}):
        for split in ("test", "all", "dev"):
            r = current.get((key, split))
            if r is None:
                continue
            f = r.figures[r.normalisation]
            rule = r.settings["splits"][split]
            lines.append(
                f"| **{SPLIT_TITLES[split]}** | {rule['train']} | {rule['scored']} | {len(r.seeds)} | **{cell(f['auc_micro'])}** "
                f"| {cell(f['auc_macro'])} | {cell(f['eer'])} | {_published(published.get('mil', {})) if split == 'all' else ''} |"
            )
    return "\n".join(lines)


def pixel_table(results_dir: Path) -> str:
    """Pixel-level masks on the synthetic scene, beside the two baselines every mask must beat."""
    lines = [
        "| scorer | mask mode | precision | recall | **F1** | F1 of the all-ones mask | F1 of a random mask, same area "
        "| pixel AUC | pixels masked | fit (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in load_pixel_records(results_dir):
        f = r.figures
        lines.append(
            f"| {r.scorer} | {r.mode} | {cell(f['pixel_precision'], 1, 3)} | {cell(f['pixel_recall'], 1, 3)} "
            f"| **{cell(f['pixel_f1'], 1, 3)}** | {cell(f['pixel_f1_all_ones'], 1, 3)} | {cell(f['pixel_f1_random'], 1, 3)} "
            f"| {cell(f['pixel_auc'], 1, 3)} | {cell(f['pixel_area'])}% | {seconds(r.fit_s)} |"
        )
    return "\n".join(lines)


EVENT_COLUMNS = "event recall | false events (per hour of normal footage) | mean delay | events | frame AUC |"


def _event_cells(f: dict, normal_s: float, auc: str, bold: bool = False) -> str:
    """The event figures of one row (`vad.evaluation.metrics.event_report`'s keys), as the two event tables show them."""
    b = "**" if bold else ""
    return (f"{b}{f['event_recall']:.2f}{b} ({f['segments_hit']}/{f['segments']}) | {f['false_events']} in {normal_s:.0f} s "
            f"({f['false_events_per_hour']:.0f}/h) | {f['mean_delay_s']:.2f} s | {f['events']} | {auc} |")


def _event_table(first_columns: str, rows: list[str]) -> str:
    columns = f"| {first_columns} | {EVENT_COLUMNS}"
    return columns + "\n" + "|---" * (columns.count(" | ") + 1) + "|\n" + "\n".join(rows)


def events_table(results_dir: Path) -> str:
    """Ped2 judged by events (`bench/ped2_events.py`): one row per split and threshold."""
    rows = []
    for split in ("test", "all", "dev"):
        path = Path(results_dir) / "events_ped2" / f"{split}.json"
        if not path.is_file():
            continue
        r = json.loads(path.read_text())
        videos = f"{r['videos'][0]}–{r['videos'][-1]}"
        tested = f", test run {r['test_run']}" if r["test_run"] else ""
        for name, label in (("quantile", f"quantile {r['settings']['threshold_quantile']:g}"),
                            ("budget", f"budget {r['settings']['max_false_per_hour']:g} false/h")):
            t = r["thresholds"][name]
            rows.append(f"| {split} ({videos}{tested}) | {label} | {t['threshold']:.3f} | "
                        + _event_cells(t, r["normal_s"], f"{100 * r['auc_micro']:.1f}", bold=split == "test"))
    return _event_table("videos | threshold | value", rows)


def demo_events_table(results_dir: Path) -> str:
    """The demo's night judged by events at both thresholds (`bench/demo_events.py`)."""
    rows = []
    for variant in ("full", "quick"):
        path = Path(results_dir) / "events_demo" / f"{variant}.json"
        if not path.is_file():
            continue
        r = json.loads(path.read_text())
        for name, label in (("quantile", "quantile 0.99 (`vad demo`'s)"), ("budget", "budget 1 false/h")):
            for scope, f in r[name]["figures"].items():
                rows.append(f"| {variant} | {label} | {scope} | " + _event_cells(f, f["normal_s"], f"{f['auc_micro']:.3f}"))
    return _event_table("demo | threshold | videos", rows)


def _published(pub: dict) -> str:
    return f"{pub['auc']:.1f} ({pub['source']})" if pub else ""


def tables(results_dir: Path = RESULTS_DIR, designs: Path = DESIGNS_FILE, ledger: Path = LEDGER_FILE) -> dict[str, str]:
    """Every generated table by the name its README marker uses."""
    records = load_records(results_dir)
    published_file = Path(results_dir) / "published.json"
    published = json.loads(published_file.read_text()) if published_file.is_file() else {}
    return {
        "ped2-full": frame_table("ped2", "full", records, designs, ledger, published),
        "ped2-fast": frame_table("ped2", "fast", records, designs, ledger, {}),
        "ped2-mil": mil_table(records, designs, ledger, published),
        "ped2-objects": ablation_table("ped2", "objects", records, designs, ledger),
        "ped2-fusion": fusion_table(records, designs, ledger, published),
        "pixel-masks": pixel_table(results_dir),
        "ped2-events": events_table(results_dir),
        "demo-events": demo_events_table(results_dir),
    }


def render(readme_text: str, made: dict[str, str]) -> str:
    """README text with every marked table replaced; a marker naming no table is an error."""
    def replace(m: re.Match) -> str:
        if m["name"] not in made:
            raise KeyError(f"README marker results:{m['name']} names no table; tables: {', '.join(made)}")
        return m.group(1) + made[m["name"]] + "\n" + m.group(4)

    return MARKER.sub(replace, readme_text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when README.md is not what the results make")
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args(argv)
    text = args.readme.read_text()
    new = render(text, tables())
    if args.check:
        if new != text:
            print(f"{args.readme} differs from bench/results: run bench/readme_tables.py", file=sys.stderr)
            return 1
        print(f"{args.readme} matches bench/results")
        return 0
    args.readme.write_text(new)
    print(f"wrote {len(MARKER.findall(new))} tables into {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
