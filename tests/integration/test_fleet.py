"""A camera fleet end to end: one model per camera trained in parallel (and resumed after a kill),
each video scored by its own camera's model, a camera without a model, a fallback, and a new
champion that re-scores only its camera."""

from pathlib import Path

import pyarrow.dataset as pads
import pytest
from helpers import DAY, DECODE

from vad.config import (
    MlflowConfig,
    OutputConfig,
    RayConfig,
    RunPolicyConfig,
    ScoreJobConfig,
    ScorerConfig,
    SourceConfig,
    TrainJobConfig,
    TrainLoopConfig,
    TrainModelConfig,
    TrainOutputConfig,
)
from vad.scoring.job import run_scoring
from vad.testing.synthetic import encode_mp4, generate_dataset, render_scene
from vad.training.fleet import run_fleet_training

TRAINED = ("cam01", "cam02", "cam03")


class Killed(Exception):
    """Stands in for the driver being killed part-way."""


@pytest.fixture(scope="module")
def fleet(ray_local, tmp_path_factory):
    """cam01-03: 3 normal videos and 1 test video each, in two different views; cam04: a test video
    only (no model will exist); cam05: one short normal video (too little footage to train)."""
    root = tmp_path_factory.mktemp("fleet-archive")
    generate_dataset(root, cameras=3, train_per_camera=3, test_per_camera=1, num_frames=96, seed=5, distinct_views=True)
    for camera, name, scene in (
        ("cam04", "test_000.mp4", render_scene(8, 96, anomalies=(("fast", 40),))),
        ("cam05", "train_000.mp4", render_scene(9, 24)),
    ):
        (root / camera / DAY).mkdir(parents=True)
        (root / camera / DAY / name).write_bytes(encode_mp4(scene.frames))
    return {"root": root, "work": tmp_path_factory.mktemp("fleet-work")}


def train_config(fleet, **train) -> TrainJobConfig:
    loop = {"epochs": 3, "batch_size": 8, "lr": 3e-3, "key_regex": "/train_", "val_fraction": 0.34, "min_camera_clips": 12, **train}
    return TrainJobConfig(
        source=SourceConfig(uri=str(fleet["root"])),
        output=TrainOutputConfig(checkpoint=str(fleet["work"] / "models" / "{camera}.pt"), version="f1"),
        model=TrainModelConfig(name="conv_ae", hparams={"widths": [16, 8, 8]}),
        train=TrainLoopConfig(per_camera=True, device="cpu", **loop),
        decode=DECODE.model_copy(update={"stride": 4}),
        mlflow=MlflowConfig(experiment="test-fleet"),
        work_dir=str(fleet["work"]),
    )


def score_config(fleet, out: Path, **scorer) -> ScoreJobConfig:
    return ScoreJobConfig(
        source=SourceConfig(uri=str(fleet["root"]), include=("*/test_*",)),
        output=OutputConfig(uri=str(out), writers=2),
        scorer=ScorerConfig(
            name="conv_ae", checkpoint="models:/vad-conv-ae.{camera}@champion", batch_size=4, device="cpu", max_models=1, **scorer
        ),
        decode=DECODE,
        mlflow=MlflowConfig(experiment="test-fleet"),
        ray=RayConfig(num_cpus=2),
        run=RunPolicyConfig(max_failure_rate=0.5),
        work_dir=str(fleet["work"]),
    )


@pytest.fixture(scope="module")
def trained(fleet):
    """A fleet run killed after its first camera, then started again."""
    cfg = train_config(fleet)
    first: list[str] = []

    def kill_after_first(row):
        first.append(row["camera"])
        raise Killed

    with pytest.raises(Killed):
        run_fleet_training(cfg, on_camera=kill_after_first)
    summary = run_fleet_training(cfg)
    return {"cfg": cfg, "first": first[0], "summary": summary}


def _client(cfg):
    from mlflow.tracking import MlflowClient

    from vad.tracking.runs import tracking_uri

    return MlflowClient(tracking_uri(cfg.mlflow, cfg.work_dir))


def test_each_camera_gets_its_own_model_and_a_thin_camera_is_skipped(trained):
    summary, cfg = trained["summary"], trained["cfg"]
    rows = {row["camera"]: row for row in summary.rows}
    assert set(rows) == {*TRAINED, "cam05"}
    assert rows["cam05"]["status"] == "skipped" and "min_camera_clips" in rows["cam05"]["note"]
    client = _client(cfg)
    for camera in TRAINED:
        row = rows[camera]
        assert row["status"] == "trained" and row["val_clips"] > 0 and row["promoted"], row
        assert Path(row["checkpoint"]).name == f"{camera}.pt" and Path(row["checkpoint"]).is_file()
        version = client.get_model_version_by_alias(f"vad-conv-ae.{camera}", "champion")
        assert version.tags["vad.camera"] == camera
    assert "cam05" in summary.table() and "camera" in summary.table().splitlines()[0]


def test_a_killed_fleet_run_trains_only_the_cameras_it_had_not_finished(trained):
    summary, cfg = trained["summary"], trained["cfg"]
    assert summary.resumed == [trained["first"]]
    client = _client(cfg)
    for camera in TRAINED:  # each camera trained (and registered) exactly once over both runs
        assert len(client.search_model_versions(f"name='vad-conv-ae.{camera}'")) == 1
    runs = client.search_runs([client.get_experiment_by_name("test-fleet").experiment_id])
    assert sorted(r.data.tags["vad.camera"] for r in runs if "vad.camera" in r.data.tags) == sorted(TRAINED)


def _rows(out: Path):
    return pads.dataset(str(out / "scores"), format="parquet", partitioning="hive").to_table().to_pandas()


@pytest.fixture(scope="module")
def first_night(trained, fleet, tmp_path_factory):
    """The fleet's first night: its results folder and summary (tests score on into copies of the folder)."""
    out = tmp_path_factory.mktemp("fleet-night") / "results"
    return out, run_scoring(score_config(fleet, out), run_date=DAY)


def _copy(first_night, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(first_night[0], tmp_path / "results"))


def test_every_clip_is_scored_by_its_cameras_model_and_a_camera_without_one_is_an_error(first_night, fleet, tmp_path):
    out, summary = _copy(first_night, tmp_path), first_night[1]
    rows = _rows(out)
    assert sorted(rows.camera.unique()) == list(TRAINED)
    for camera, group in rows.groupby("camera"):
        assert set(group.model_name) == {f"vad-conv-ae.{camera}"} and set(group.model_version) == {"1"}
        assert not group.model_fallback.any()
    assert [(e["stage"], e["uri"].split("/")[-3]) for e in summary.errors] == [("model", "cam04")]
    assert "no usable model for camera cam04" in summary.errors[0]["message"]

    with_fallback = score_config(fleet, out, fallback=str(fleet["work"] / "models" / "cam01.pt"))
    again = run_scoring(with_fallback, run_date=DAY)
    assert again.errors == [] and again.up_to_date == 3 and len(again.files) == 1
    fallback_rows = _rows(out).query("camera == 'cam04'")
    assert len(fallback_rows) > 0 and fallback_rows.model_fallback.all() and set(fallback_rows.model_name) == {"vad-conv-ae.cam01"}


def test_a_new_champion_rescores_only_its_camera(first_night, fleet, tmp_path, capsys):
    """cam02 retrained with `vad train` (per camera: it prints the fleet's table), its new version made the
    champion: the next night re-scores cam02's videos only. In a copy of the fleet's work folder (its MLflow
    registry), so the champion it moves and the version it adds are not the other tests' in any order."""
    import shutil

    import yaml

    from vad.cli import main
    from vad.tracking.registry import promote
    from vad.tracking.runs import tracking_uri

    out, first = _copy(first_night, tmp_path), first_night[1]
    assert len(first.files) == 3
    fleet = {**fleet, "work": Path(shutil.copytree(fleet["work"], tmp_path / "work"))}
    cfg = train_config(fleet, key_regex="cam02/.*/train_", seed=1)
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    capsys.readouterr()
    assert main(["train", "--config", str(path)]) == 0
    printed = capsys.readouterr().out
    header, *rows = printed.split("\n{")[0].splitlines()
    assert header.split()[:3] == ["camera", "|", "status"] and [row.split()[0] for row in rows if "|" in row] == ["cam02"], printed
    assert '"trained": 1' in printed and '"skipped": 0' in printed and '"failed": 0' in printed
    promote("vad-conv-ae.cam02", "2", "champion", tracking_uri(cfg.mlflow, cfg.work_dir))
    second = run_scoring(score_config(fleet, out), run_date=DAY)
    assert [Path(f).parent.name for f in second.files] == ["camera=cam02"] and second.up_to_date == 2
    rows = _rows(out).query("camera == 'cam02'")
    assert set(rows.model_version) == {"1", "2"}  # the old file stays beside the new model's
