"""The object scorer through the platform: a fleet of two cameras fits one object model per camera
with Ray Data actors (the detector's weights read from S3), the nightly job routes each camera's
videos to its model and writes the objects table and a reason per clip, SQL reads them, and the
review page, rendered by chromium, boxes the objects that drove each flagged clip.

The synthetic scene's movers are no COCO objects: the moving-region boxes find them; the detector
runs on every analysed frame all the same (and finds little), as it would on a real camera."""

from pathlib import Path

import numpy as np
import pytest
from helpers import DECODE, render_in_browser

from vad.config import (
    DistributedConfig,
    MlflowConfig,
    OutputConfig,
    ScoreJobConfig,
    ScorerConfig,
    SourceConfig,
    TrainJobConfig,
    TrainLoopConfig,
    TrainModelConfig,
    TrainOutputConfig,
)
from vad.datasets import data_dir
from vad.models.checkpoint import load_checkpoint
from vad.results.sql import run_query
from vad.scoring.job import run_scoring

RGB = DECODE.model_copy(update={"grayscale": False, "resize": (96, 128)})
WEIGHTS = data_dir("yolox_nano.onnx")


@pytest.fixture(scope="module")
def detector_uri(s3):
    if WEIGHTS is None:
        pytest.skip("yolox_nano.onnx is not in the benchmark data folder (../shared/data)")
    client = s3.client()
    client.create_bucket(Bucket="weights")
    client.put_object(Bucket="weights", Key="yolox_nano.onnx", Body=(WEIGHTS / "yolox_nano.onnx").read_bytes())
    return "s3://weights/yolox_nano.onnx"


@pytest.fixture(scope="module")
def fleet(ray_local, s3, archive, detector_uri, tmp_path_factory):
    from vad.training.fleet import run_fleet_training

    work = tmp_path_factory.mktemp("objects")
    cfg = TrainJobConfig(
        source=SourceConfig(uri=archive["uri"]),
        output=TrainOutputConfig(checkpoint=str(work / "{camera}.pt"), version="o1"),
        model=TrainModelConfig(name="objects", hparams={"detector": detector_uri, "every": 2, "components": 4, "motion_threshold": 15}),
        train=TrainLoopConfig(key_regex="/train_", val_fraction=0.5, device="cpu", per_camera=True, min_camera_clips=4),
        distributed=DistributedConfig(num_workers=2, cpus_per_worker=0.5),
        decode=RGB, storage=s3.storage_config(), mlflow=MlflowConfig(experiment="test-objects"), work_dir=str(work),
    )
    return cfg, run_fleet_training(cfg), work


def test_a_fleet_fits_one_object_model_per_camera(fleet):
    cfg, summary, work = fleet
    assert [row["status"] for row in summary.rows] == ["trained", "trained"], summary.table()
    models = [load_checkpoint(str(work / f"{camera}.pt"), cfg.storage) for camera in ("cam01", "cam02")]
    assert [m.model_name for m in models] == ["vad-objects.cam01", "vad-objects.cam02"]
    for loaded in models:
        assert loaded.model.velocity_density.fitted and loaded.model.appearance_density.fitted and np.isfinite(loaded.threshold)
        assert not loaded.model.geometry_density.fitted  # not among the default attributes
        assert np.isfinite(loaded.metrics["train/loss"]) and np.isfinite(loaded.metrics["val/loss"])
        assert (loaded.model.high > loaded.model.low).all()
    # each camera's normal is its own: fitted on its own footage only
    assert not np.allclose(models[0].model.velocity_density.means.numpy(), models[1].model.velocity_density.means.numpy())
    assert models[0].model.readable_high[0] != models[1].model.readable_high[0]


@pytest.fixture(scope="module")
def night(fleet, s3, archive, tmp_path_factory):
    cfg, _, work = fleet
    out = tmp_path_factory.mktemp("objects-night")
    job = ScoreJobConfig(
        source=SourceConfig(uri=archive["uri"]), output=OutputConfig(uri=str(out / "results")),
        scorer=ScorerConfig(name="objects", checkpoint=str(work / "{camera}.pt"), batch_size=4, device="cpu"), decode=RGB,
        storage=s3.storage_config(), mlflow=MlflowConfig(enabled=False), work_dir=str(out / "work"),
    )
    return job, run_scoring(job, run_date="2026-11-24"), out


def test_the_night_has_objects_and_reasons_in_sql(night, archive):
    job, summary, _ = night
    assert summary.clips > 0 and not summary.errors
    results, rid = job.output.uri, summary.run_id  # this night's run only: `fused` adds others to the same folder
    _, rows = run_query(results, f"SELECT count(*), count(DISTINCT o.clip_id), min(o.score), max(o.x1 - o.x0) FROM objects o JOIN scores s USING (clip_id) "
                                  f"WHERE s.run_id = '{rid}'")
    objects, clips, low, widest = rows[0]
    assert objects > clips > 0 and low >= -1e-6 and 0 < widest <= RGB.resize[1]
    _, top = run_query(results, f"SELECT s.reason, s.score, o.attribute, o.score FROM scores s JOIN objects o USING (clip_id) "
                                f"WHERE s.run_id = '{rid}' ORDER BY s.score DESC, o.score DESC LIMIT 1")
    reason, clip_score, attribute, object_score = top[0]
    assert reason and attribute in reason and abs(clip_score - object_score) < 1e-4  # the clip's score is its worst object's
    # the injected anomalies score higher than the normal clips around them (clip-level AUC)
    from sklearn.metrics import roc_auc_score

    _, scored = run_query(results, f"SELECT video_uri, start_frame, end_frame, score FROM scores WHERE run_id = '{rid}'")
    labels, scores = [], []
    for uri, start, end, score in scored:
        key = uri.split("footage/", 1)[1]
        labels.append(bool(archive["labels"][key][start : end + 1].any()))
        scores.append(score)
    assert 0 < sum(labels) < len(labels)
    assert roc_auc_score(labels, scores) > 0.7
    # the flagged clips, merged into events: each flagged clip in exactly one, its peak's reason carried
    _, events = run_query(results, f"SELECT count(*), sum(e.clips), bool_and(e.reason = s.reason) FROM events e "
                                   f"JOIN scores s ON s.clip_id = e.peak_clip_id AND s.run_id = e.run_id WHERE e.run_id = '{rid}'")
    assert events[0] == (summary.events, summary.anomalous_clips, True) and 0 < summary.events <= summary.anomalous_clips
    _, runs = run_query(results, f"SELECT events FROM runs WHERE run_id = '{rid}'")
    assert runs == [(summary.events,)]


def test_the_review_page_boxes_the_objects_in_chromium(night, s3):
    import re

    from vad.review.report import run_report

    job, summary, out = night
    if not summary.anomalous_clips:
        pytest.fail("the test night needs flagged clips")
    page = run_report(job.output.uri, storage=s3.storage_config(), top_k=3, out_dir=out / "pages")
    dom = render_in_browser(Path(page.path))
    boxes = [int(n) for n in re.findall(r'data-boxes="(\d+)"', dom)]
    assert len(boxes) == page.shown and all(n >= 1 for n in boxes)
    assert dom.count('class="reason"') == page.shown and 'data-images-broken="0"' in dom
    printed = page.line().splitlines()  # what `vad report` prints: the summary, then each top clip's reason
    assert len(printed) == 1 + page.shown and printed[1].startswith("  #1 ") and "score" in printed[1]


def test_ped2_frame_folders_through_vad_train_and_vad_score(ray_local, tmp_path):
    """Real footage through the jobs: fitted on three Ped2 training videos (frame folders), scoring
    development video 01, where a cyclist rides through the walkers from frame 61 on: the detector
    names a bicycle in its flagged frames, and its top clip is one of the cyclist's."""
    import shutil

    from vad.config import DecodeConfig
    from vad.datasets.ped2 import load_ped2
    from vad.training.job import run_training

    if WEIGHTS is None or data_dir() is None:
        pytest.skip("Ped2 or yolox_nano.onnx is not in the benchmark data folder (../shared/data)")
    ped2 = load_ped2()
    footage = tmp_path / "ped2"
    for v in ("01", "02", "03"):
        shutil.copytree(ped2.train_dir / v, footage / "train" / f"train_{v}")
    shutil.copytree(ped2.test_dir / "01", footage / "test" / "test_01")
    decode = DecodeConfig(clip_len=16, stride=16, resize=(240, 360), grayscale=False)
    cfg = TrainJobConfig(
        source=SourceConfig(uri=str(footage / "train")), output=TrainOutputConfig(checkpoint=str(tmp_path / "ped2.pt"), version="p1"),
        model=TrainModelConfig(name="objects", hparams={"detector": str(WEIGHTS / "yolox_nano.onnx")}),
        train=TrainLoopConfig(val_fraction=0.34, device="cpu"), distributed=DistributedConfig(num_workers=2, cpus_per_worker=0.5),
        decode=decode, mlflow=MlflowConfig(enabled=False), work_dir=str(tmp_path / "work"),
    )
    trained = run_training(cfg)
    assert trained.result.history[0]["train/objects"] > 100  # a dozen walkers a frame
    out = tmp_path / "results"
    job = ScoreJobConfig(
        source=SourceConfig(uri=str(footage / "test")), output=OutputConfig(uri=str(out)),
        scorer=ScorerConfig(name="objects", checkpoint=trained.checkpoint, batch_size=4, device="cpu"), decode=decode,
        mlflow=MlflowConfig(enabled=False), work_dir=str(tmp_path / "work"),
    )
    scored = run_scoring(job)
    assert scored.clips == 180 // 16 + 1 and not scored.errors
    labels = ped2.test_labels("dev")["01"]
    _, top = run_query(str(out), "SELECT start_frame, end_frame, reason FROM scores ORDER BY score DESC LIMIT 1")
    start, end, reason = top[0]
    assert labels[start : end + 1].any() and reason, top
    _, bikes = run_query(str(out), "SELECT count(*) FROM objects WHERE label = 'bicycle' AND frame >= 60")
    assert bikes[0][0] > 0


@pytest.fixture(scope="module")
def fused(night, checkpoint, s3):
    """The same night scored by the suite's conv_ae too (registered: models:/vad-conv-ae@champion) and the two
    fused: the object models (one per camera) first, so the fused clips are theirs."""
    from vad.config import FuseJobConfig, FusionConfig, FusionMemberConfig
    from vad.fusion.job import run_fusion
    from helpers import DECODE as GRAY

    job, _, out = night
    fleet_work = Path(job.scorer.checkpoint).parent
    registered = "models:/vad-conv-ae@champion"
    conv = job.model_copy(update={"scorer": ScorerConfig(name="conv_ae", checkpoint=registered, batch_size=4, device="cpu"),
                                  "decode": GRAY, "work_dir": str(checkpoint["work"])})
    assert not run_scoring(conv, run_date="2026-11-24").errors
    cfg = FuseJobConfig(
        output=job.output, storage=job.storage, mlflow=MlflowConfig(enabled=False), work_dir=str(checkpoint["work"]),
        fusion=FusionConfig(members=[FusionMemberConfig(model=str(fleet_work / "{camera}.pt")), FusionMemberConfig(model=registered)]),
    )
    return cfg, run_fusion(cfg, run_date="2026-11-25"), out


def test_two_models_of_the_night_are_fused_and_the_objects_reason_survives(fused, night, archive):
    from sklearn.metrics import roc_auc_score

    cfg, summary, _ = fused
    assert not summary.errors and summary.model_name == "fusion(objects,conv_ae)" and summary.clips > 0
    results = cfg.output.uri
    _, rows = run_query(results, """
        SELECT f.clip_id, f.reason, o.reason, f.score, f.threshold, f.video_uri, f.start_frame, f.end_frame
        FROM scores f JOIN scores o USING (clip_id)
        WHERE f.model_name = 'fusion(objects,conv_ae)' AND o.model_name LIKE 'vad-objects.%'""")
    assert len(rows) == summary.clips  # every fused clip is an object model's clip
    led_by_objects = [r for r in rows if r[1].startswith("objects: ")]
    assert led_by_objects and all(r[1] == f"objects: {r[2]}" for r in led_by_objects if r[2])
    assert all(r[1].startswith("conv_ae: ") for r in rows if r not in led_by_objects)
    labels = [bool(archive["labels"][uri.split("footage/", 1)[1]][start : end + 1].any()) for *_, uri, start, end in rows]
    assert roc_auc_score(labels, [r[3] for r in rows]) > 0.7
    _, copied = run_query(results, "SELECT count(*) FROM objects WHERE model_name = 'fusion(objects,conv_ae)'")
    assert copied[0][0] > 0
    from vad.fusion.job import run_fusion

    again = run_fusion(cfg, run_date="2026-11-26")
    assert again.files == [] and again.up_to_date == len(summary.files)


def test_a_calibration_round_trips_through_the_registry(fused, checkpoint):
    from vad.fusion.plan import resolve_member
    from vad.models.calibration import Calibration
    from vad.models.checkpoint import load_checkpoint
    from vad.tracking.registry import set_registered_calibration
    from vad.tracking.runs import tracking_uri

    cfg, _, _ = fused
    spec = cfg.fusion.members[1]
    member = resolve_member(spec, "cam01", tracking_uri(cfg.mlflow, cfg.work_dir), cfg)
    trained = load_checkpoint(checkpoint["uri"], cfg.storage).calibration
    assert member.name == "vad-conv-ae" and trained is not None and member.calibration == trained
    later = Calibration.from_frame_scores(np.linspace(0.0, 1.0, 101), "set after registration")
    set_registered_calibration(member.name, member.version, later, tracking_uri(cfg.mlflow, cfg.work_dir))
    try:
        assert resolve_member(spec, "cam01", tracking_uri(cfg.mlflow, cfg.work_dir), cfg).calibration == later
    finally:
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking_uri(cfg.mlflow, cfg.work_dir)).delete_model_version_tag(member.name, member.version, "vad.calibration")


def test_the_review_page_shows_the_fused_model_in_chromium(fused, s3):
    from vad.review.report import run_report

    cfg, summary, out = fused
    if not summary.anomalous_clips:
        pytest.fail("the fused night needs flagged clips")
    page = run_report(cfg.output.uri, storage=s3.storage_config(), run_id=summary.run_id, top_k=3, out_dir=out / "fused-pages")
    dom = render_in_browser(Path(page.path))
    assert dom.count("fusion(objects,conv_ae), version f") == page.shown > 0 and 'data-images-broken="0"' in dom
    assert dom.count('class="reason"') == page.shown
