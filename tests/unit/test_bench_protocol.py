"""The accuracy protocol of bench/: the Ped2 split cannot be mixed, test runs need recorded and committed
settings and are counted, result records round-trip as JSON, and the README's accuracy tables are the
ones the committed results make."""

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench import ped2 as ped2_bench
from bench import readme_tables
from bench.ped2_mil import choose_videos
from bench.protocol import (
    Design, ProtocolError, ResultRecord, begin_test_run, check_recorded, committed, end_test_run, load_records,
    record_design, previous_test_runs, write_record,
)
from vad.datasets.ped2 import SPLITS, Ped2

README = Path(__file__).resolve().parents[2] / "README.md"


def _design(**settings) -> Design:
    return Design("ped2", "conv_ae", "fast", {"epochs": 10, "lr": 2e-3, **settings})


def _record(**overrides) -> ResultRecord:
    fields = dict(
        benchmark="ped2", scorer="conv_ae", variant="fast", split="test", design_digest=_design().digest,
        settings=_design().settings, videos=list(SPLITS["test"]), seeds=[0, 1],
        figures={"none": {"auc_micro": [0.7, 0.72], "auc_macro": [0.8, math.nan], "eer": [0.3, 0.31]},
                 "regularity": {"auc_micro": [0.8, 0.81], "auc_macro": [0.8, math.nan], "eer": [0.2, 0.21]}},
        paper_normalisation="regularity", fit_s=[12.0, 13.0], clips_per_s=[500.0, 510.0], test_run=1,
        date="2026-11-29", machine={"cpu": "x", "cores": 2},
    )
    return ResultRecord(**{**fields, **overrides})


# ------------------------------------------------------------------------------------------ split


def test_the_split_is_fixed_and_disjoint():
    assert SPLITS["dev"] == ("01", "02", "03", "04", "05", "06")
    assert SPLITS["test"] == ("07", "08", "09", "10", "11", "12")
    assert not set(SPLITS["dev"]) & set(SPLITS["test"]) and SPLITS["all"] == SPLITS["dev"] + SPLITS["test"]


def test_mil_weak_splits_keep_the_test_half_out_of_dev_and_training():
    videos = {f"test/{v}": {} for v in SPLITS["all"]} | {f"train/{i:02d}": {} for i in range(1, 17)}
    test_half = {f"test/{v}" for v in SPLITS["test"]}
    for seed in range(5):
        train_a, train_n, scored = choose_videos(videos, "dev", seed)
        assert not (train_a | set(scored)) & test_half and len(train_a) == 3 and len(train_n) == 4
        assert not train_a & set(scored) and not train_n & set(scored)
        train_a, _, scored = choose_videos(videos, "test", seed)
        assert train_a == {f"test/{v}" for v in SPLITS["dev"]}
        assert {k for k in scored if k.startswith("test/")} == test_half


# -------------------------------------------------------------------------------- records as data


def test_result_record_round_trips_through_json(tmp_path):
    record = _record()
    path = write_record(record, tmp_path)
    assert json.loads(path.read_text())["figures"]["none"]["auc_macro"] == [0.8, None]  # NaN stored as null
    (back,) = load_records(tmp_path)
    assert back.figures["none"]["auc_micro"] == [0.7, 0.72] and math.isnan(back.figures["none"]["auc_macro"][1])
    assert {k: v for k, v in back.__dict__.items() if k != "figures"} == {k: v for k, v in record.__dict__.items() if k != "figures"}
    assert back.mean("auc_micro") == pytest.approx(0.71) and back.mean("auc_macro") == pytest.approx(0.8)


@pytest.mark.parametrize("bad, message", [
    ({"split": "train"}, "split 'train'"),
    ({"test_run": 0}, "test_run 0"),
    ({"split": "dev", "test_run": 1}, "test_run 1"),
    ({"seeds": [0, 1, 2]}, "one value per seed"),
    ({"normalisation": "minmax"}, "headline normalisation"),
    ({"schema": 0}, "schema 0"),
])
def test_result_record_refuses_what_the_tables_could_misread(bad, message):
    with pytest.raises(ValueError, match=message):
        _record(**bad)


# ------------------------------------------------------------------------------- designs and gate


def test_a_design_is_named_by_every_setting(tmp_path):
    designs = tmp_path / "designs.json"
    assert _design().digest == _design().digest != _design(epochs=11).digest
    assert record_design(_design(), designs) and not record_design(_design(), designs)
    assert check_recorded(_design(), designs, require_committed=False) == ""
    with pytest.raises(ProtocolError, match="not recorded"):
        check_recorded(_design(epochs=11), designs, require_committed=False)


def test_a_test_run_needs_the_design_committed_in_git(tmp_path):
    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    designs = tmp_path / "designs.json"
    record_design(_design(), designs)
    with pytest.raises(ProtocolError, match="not committed"):
        check_recorded(_design(), designs)
    git("add", "designs.json")
    git("commit", "-qm", "designs")
    ok, commit = committed(designs)
    assert ok and check_recorded(_design(), designs) == commit and len(commit) == 40
    record_design(_design(epochs=12), designs)  # a new design written but not committed
    with pytest.raises(ProtocolError, match="changes that are not committed"):
        check_recorded(_design(epochs=12), designs)


def test_a_second_test_run_of_a_design_is_refused_without_a_reason_and_counted(tmp_path):
    designs, ledger = tmp_path / "designs.json", tmp_path / "runs.jsonl"
    record_design(_design(), designs)
    with pytest.raises(ValueError, match="does not read"):
        begin_test_run(_design(), "dev", designs=designs, ledger=ledger, require_committed=False)
    gate = begin_test_run(_design(), "test", designs=designs, ledger=ledger, require_committed=False)
    end_test_run(gate, {"test/none/auc_micro": 0.7}, ledger)
    with pytest.raises(ProtocolError, match="tested already"):
        begin_test_run(_design(), "all", designs=designs, ledger=ledger, require_committed=False)
    again = begin_test_run(_design(), "test", again="new decoder", designs=designs, ledger=ledger, require_committed=False)
    end_test_run(again, {"test/none/auc_micro": 0.71}, ledger)
    runs = previous_test_runs(_design(), ledger)
    assert [r["run"] for r in runs] == [1, 2] and runs[1]["again"] == "new decoder"


def test_a_test_run_that_dies_after_the_gate_still_counts(tmp_path):
    designs, ledger = tmp_path / "designs.json", tmp_path / "runs.jsonl"
    record_design(_design(), designs)
    begin_test_run(_design(), "test", designs=designs, ledger=ledger, require_committed=False)  # never finished
    with pytest.raises(ProtocolError, match="tested already"):
        begin_test_run(_design(), "test", designs=designs, ledger=ledger, require_committed=False)


# ------------------------------------------------------------------ bench/ped2.py on a small Ped2


def _frames(folder: Path, n: int, anomalous: range, rng) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        frame = rng.integers(90, 110, size=(48, 72), dtype=np.uint8)
        x = (3 * i) % 60
        frame[20:28, x : x + 6] = 60  # a pedestrian walking by
        if i in anomalous:
            frame[8:24, (5 * i) % 50 : (5 * i) % 50 + 16] = 250  # something large and bright
        Image.fromarray(np.stack([frame] * 3, -1)).save(folder / f"{i:03d}.jpg")


@pytest.fixture
def small_ped2(tmp_path) -> Ped2:
    """A Ped2-shaped tree: 3 normal training videos of 30 frames, 12 test videos of 24 frames, each
    anomalous in frames 12-23, and the flat label file."""
    rng = np.random.default_rng(0)
    root = tmp_path / "ped2"
    for v in range(1, 4):
        _frames(root / "training" / "frames" / f"{v:02d}", 30, range(0), rng)
    labels = []
    for v in SPLITS["all"]:
        _frames(root / "testing" / "frames" / v, 24, range(12, 24), rng)
        labels += [0] * 12 + [1] * 12
    np.save(root / "frame_labels_ped2.npy", np.array([labels], dtype=np.uint8))
    return Ped2(root)


def _bench(ped2, tmp_path, split, **kw):
    return ped2_bench.run(
        ["conv_ae"], "fast", split, designs=tmp_path / "designs.json", ledger=tmp_path / "runs.jsonl",
        results_dir=tmp_path / "results", require_committed=False, ped2=ped2, epochs=1, **kw,
    )


def test_a_dev_run_never_reads_the_test_half(small_ped2, tmp_path):
    (record,) = _bench(small_ped2, tmp_path, "dev")
    assert record.split == "dev" and record.videos == list(SPLITS["dev"]) and record.test_run == 0
    assert record.frames == 6 * 24 and record.figures["regularity"]["auc_micro"][0] > 0.5
    # 07-12's labels turned upside down and their frames removed: the dev figures do not move.
    flat = np.load(small_ped2.root / "frame_labels_ped2.npy")
    flat[:, 6 * 24 :] = 1 - flat[:, 6 * 24 :]
    np.save(small_ped2.root / "frame_labels_ped2.npy", flat)
    for v in SPLITS["test"]:
        for f in (small_ped2.test_dir / v).iterdir():
            f.unlink()
        (small_ped2.test_dir / v).rmdir()
    (again,) = _bench(small_ped2, tmp_path, "dev")
    assert again.figures == record.figures
    assert not (tmp_path / "runs.jsonl").exists()
    assert [p.name.split("-")[2] for p in (tmp_path / "results" / "ped2").iterdir()] == ["dev"]


def test_a_test_run_of_unrecorded_settings_is_refused_before_anything_is_read(tmp_path):
    nothing = Ped2(tmp_path / "absent")  # no videos, no labels: a run that read anything would fail otherwise
    with pytest.raises(ProtocolError, match="not recorded"):
        _bench(nothing, tmp_path, "test")
    assert not (tmp_path / "results").exists() and not (tmp_path / "runs.jsonl").exists()


def test_an_all_run_writes_dev_test_and_all_and_is_in_the_ledger(small_ped2, tmp_path):
    from bench.ped2_harness import PED2_SETTINGS, design

    settings = PED2_SETTINGS["fast"]["conv_ae"]

    hparams, decode, spec, _, lr = (

        settings.hparams, settings.decode, settings.train_strides, settings.epochs, settings.lr)
    record_design(design("conv_ae", "fast", hparams, decode, spec, epochs=1, lr=lr), tmp_path / "designs.json")
    records = _bench(small_ped2, tmp_path, "all")
    by_split = {r.split: r for r in records}
    assert set(by_split) == {"dev", "test", "all"}
    assert by_split["test"].videos == list(SPLITS["test"]) and by_split["all"].frames == 12 * 24
    assert by_split["test"].test_run == by_split["all"].test_run == 1 and by_split["dev"].test_run == 0
    started, row = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert started["status"] == "started" and "figures" not in started and started["run"] == row["run"] == 1
    assert row["status"] == "finished"
    assert row["figures"]["test/regularity/auc_micro"] == pytest.approx(by_split["test"].mean("auc_micro", "regularity"))
    with pytest.raises(ProtocolError, match="tested already"):
        _bench(small_ped2, tmp_path, "test")


# ----------------------------------------------------------------------------------- README tables


def test_the_readme_tables_are_the_ones_the_committed_results_make():
    text = README.read_text()
    assert readme_tables.MARKER.search(text), "README has no generated table"
    assert readme_tables.render(text, readme_tables.tables()) == text, "run bench/readme_tables.py"


def test_tables_show_only_the_current_design_and_name_its_split(tmp_path):
    designs = tmp_path / "designs.json"
    old, new = _design(), _design(epochs=30)
    record_design(old, designs)
    write_record(_record(design_digest=old.digest, figures={"none": {m: [0.11, 0.11] for m in ("auc_micro", "auc_macro", "eer")}}), tmp_path)
    record_design(new, designs)
    write_record(_record(design_digest=new.digest, settings=new.settings), tmp_path)
    write_record(_record(design_digest=new.digest, settings=new.settings, split="dev", test_run=0), tmp_path)
    made = readme_tables.tables(tmp_path, designs, tmp_path / "none.jsonl")["ped2-fast"]
    assert "11.0" not in made  # the old design's figures are gone
    assert "| conv_ae | " in made and "**71.0 ± 1.0**" in made and "| **80.5 ± 0.5** |" in made  # none, then the paper's
    for again in (None, "a reason"):  # tested twice: the table says so
        begin_test_run(new, "test", again=again, designs=designs, ledger=tmp_path / "runs.jsonl", require_committed=False)
    assert "| conv_ae (tested 2×) | " in readme_tables.tables(tmp_path, designs, tmp_path / "runs.jsonl")["ped2-fast"]
    text = "x\n<!-- results:ped2-fast -->\nstale\n<!-- /results -->\ny\n"
    assert readme_tables.render(text, {"ped2-fast": made}) == f"x\n<!-- results:ped2-fast -->\n{made}\n<!-- /results -->\ny\n"
    with pytest.raises(KeyError, match="names no table"):
        readme_tables.render(text.replace("ped2-fast", "ped2-typo"), {"ped2-fast": made})


def test_pixel_records_round_trip_and_make_their_table(tmp_path):
    from bench.protocol import PIXEL_METRICS, PixelRecord, load_pixel_records, write_pixel_record

    figures = {m: [0.5] for m in PIXEL_METRICS} | {"pixel_f1": [0.211], "pixel_area": [0.072]}
    record = PixelRecord(scorer="patch_knn", mode="calibrated", settings={"k": 1}, seeds=[0], figures=figures, fit_s=[13.0])
    write_pixel_record(record, tmp_path)
    assert load_pixel_records(tmp_path) == [record]
    row = readme_tables.tables(tmp_path, tmp_path / "designs.json", tmp_path / "none.jsonl")["pixel-masks"].splitlines()[2]
    assert row.startswith("| patch_knn | calibrated |") and "**0.211**" in row and "7.2%" in row
    with pytest.raises(ValueError, match="pixel_auc"):
        PixelRecord(scorer="x", mode="y", settings={}, seeds=[0], figures={m: [0.1] for m in PIXEL_METRICS if m != "pixel_auc"})
