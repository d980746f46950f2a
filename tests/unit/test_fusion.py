"""Fusion: calibration records, the frame-by-frame rule on known inputs, and `vad fuse` over results
written by hand (real Parquet files, a real manifest, real checkpoints): fused rows, a missing member's
error row, what a re-run fuses again."""

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from helpers import hand_scored, write_hand_scored

from vad.config import FuseJobConfig, FusionConfig, FusionMemberConfig, MlflowConfig, OutputConfig
from vad.fusion.job import run_fusion
from vad.fusion.plan import DECODE, plan_fusion
from vad.fusion.rules import Member, frame_series, fuse_frames, fuse_video, fused_threshold
from vad.models.calibration import LEVELS, Calibration
from vad.results.ledger import ManifestKey, ManifestWriter, read_manifest
from vad.results.schema import clip_id
from vad.results.sql import run_query


def calibration(low: float, high: float) -> Calibration:
    """A calibration whose quantiles rise linearly from low (level 0.5) to high (level 0.999)."""
    quantiles = tuple(low + (high - low) * min(1.0, i / 5) for i in range(len(LEVELS)))
    return Calibration(low, high, (low + high) / 2, (high - low) / 4, quantiles, 1000)


def test_a_calibration_is_computed_scaled_and_round_tripped():
    scores = np.random.default_rng(0).normal(10.0, 2.0, 100_000)
    cal = Calibration.from_frame_scores(scores)
    assert cal.low == pytest.approx(scores.min()) and cal.high == pytest.approx(np.quantile(scores, 0.999))
    assert cal.scale([cal.low, cal.high]).tolist() == pytest.approx([0.0, 1.0])
    assert cal.scaled_quantile(0.999) == pytest.approx(1.0)
    assert cal.scaled_quantile(0.99) == pytest.approx(float(cal.scale(np.quantile(scores, 0.99))), rel=1e-6)
    assert cal.median == pytest.approx(10.0, abs=0.05) and cal.mad == pytest.approx(2.0 * 0.6745, rel=0.02)
    assert Calibration.from_json(cal.to_json()) == cal and Calibration.from_dict(cal.to_dict()) == cal
    with pytest.raises(ValueError, match="no finite"):
        Calibration.from_frame_scores([np.nan])
    with pytest.raises(ValueError, match="outside"):
        cal.scaled_quantile(0.3)


def test_training_records_a_calibration_that_travels_in_the_checkpoint(tmp_path):
    from vad.models.checkpoint import load_checkpoint, read_checkpoint_record, save_checkpoint
    from vad.models.scorers import build_scorer, scorer_meta
    from vad.training.local import fit, score_clips

    tiny = scorer_meta("conv_ae").tiny
    model = build_scorer("conv_ae", **tiny.hparams)
    clips = (np.random.default_rng(1).random((24, *tiny.input_shape[1:])) * 255).astype(np.uint8)
    result = fit(model, clips, epochs=1, batch_size=8, val_fraction=0.25)
    held_out = clips[np.random.default_rng(0).permutation(len(clips))[:6]]  # fit's own held-out draw (seed 0)
    expected = score_clips(model, held_out, field="frame_scores")
    assert result.calibration.frames == expected.size and result.calibration.high == pytest.approx(np.quantile(expected, 0.999), rel=1e-5)
    save_checkpoint(str(tmp_path / "m.pt"), model, version="3", threshold=result.threshold, decode={}, calibration=result.calibration)
    assert load_checkpoint(str(tmp_path / "m.pt")).calibration == result.calibration
    assert read_checkpoint_record(str(tmp_path / "m.pt")).calibration == result.calibration
    save_checkpoint(str(tmp_path / "old.pt"), model, version="1", threshold=1.0, decode={})  # as models trained before
    assert load_checkpoint(str(tmp_path / "old.pt")).calibration is None


def test_two_members_are_fused_by_frame():
    """Member A scores 8-frame clips every frame; B 4-frame clips every 2nd frame, offset: both are put on
    their own scale and summed (or maxed) frame by frame, and cut into A's clips."""
    a, b = Member("a", "A", "1", calibration(0.0, 10.0)), Member("b", "B", "1", calibration(1.0, 3.0), weight=2.0)
    rows_a = pa.table({"start_frame": [0, 8], "end_frame": [7, 15], "frame_step": [1, 1],
                       "frame_scores": [[float(i) for i in range(8)], [float(i) for i in range(8, 16)]]})
    rows_b = pa.table({"start_frame": [0, 8], "end_frame": [6, 14], "frame_step": [2, 2],
                       "frame_scores": [[1.0, 1.0, 2.0, 2.0], [3.0, 3.0, 1.0, 1.0]]})
    series_b = frame_series(rows_b, 16)
    assert series_b[:8].tolist() == [1.0, 1.0, 1.0, 1.5, 2.0, 2.0, 2.0, 2.5]  # between sampled frames: interpolated
    assert series_b[14:].tolist() == [1.0, 1.0]  # past the last sampled frame: held
    fused, contributions = fuse_frames([frame_series(rows_a, 16), series_b], [a, b], "sum")
    expected = np.arange(16) / 10.0 + 2.0 * (series_b - 1.0) / 2.0
    assert fused == pytest.approx(expected) and contributions.shape == (2, 16)
    video = fuse_video([rows_a, rows_b], [a, b], "sum")
    assert [f.tolist() for f in video.frame_scores] == [pytest.approx(expected[:8]), pytest.approx(expected[8:])]
    assert video.scores.tolist() == pytest.approx([expected[:8].max(), expected[8:].max()])
    # clip 2's worst frame is 10 (B's 3.0 -> 2 x (3 - 1) / 2 = 2.0, A's 1.0): B contributed most there
    assert video.worst_frame.tolist() == [7, 10] and video.leader == [1, 1] and video.leader_value[1] == pytest.approx(2.0)
    maxed, _ = fuse_frames([frame_series(rows_a, 16), series_b], [a, b], "max")
    assert maxed == pytest.approx(np.maximum(np.arange(16) / 10.0, series_b - 1.0))
    with pytest.raises(ValueError, match="unknown fusion rule"):
        fuse_frames([series_b], [b], "mean")


def test_the_fused_threshold_comes_from_the_members_calibrations():
    a, b = Member("a", "A", "1", calibration(0.0, 10.0)), Member("b", "B", "1", calibration(1.0, 3.0), weight=2.0)
    level = 0.99
    assert fused_threshold([a, b], "sum", level) == pytest.approx(a.calibration.scaled_quantile(level) + 2 * b.calibration.scaled_quantile(level))
    assert fused_threshold([a, b], "max", level) == pytest.approx(2 * b.calibration.scaled_quantile(0.995))


# -- `vad fuse` over results written by hand ------------------------------------------------------------------

CAMERAS = {"cam01": ["s3://archive/cam01/2026-11-24/a.mp4", "s3://archive/cam01/2026-11-24/b.mp4"],
           "cam02": ["s3://archive/cam02/2026-11-24/c.mp4"]}


def member_model():
    """Every member's weights (seeded: the same model whatever the checkpoint says around it)."""
    import torch

    from vad.models.scorers import build_scorer, scorer_meta

    torch.manual_seed(0)
    return build_scorer("conv_ae", **scorer_meta("conv_ae").tiny.hparams)


def identity(version: str) -> str:
    """The version a member's rows record: a checkpoint known by its path is known by its weights too."""
    from vad.models.checkpoint import identity_version, weights_digest

    return identity_version(version, weights_digest(member_model().state_dict()))


def member_checkpoint(path, version: str, cal: Calibration | None, model_name: str | None = None) -> None:
    """A member's checkpoint; `model_name` names it among models of the same scorer (as a fleet's per-camera names do)."""
    from vad.io.storage import write_bytes
    from vad.models.checkpoint import checkpoint_bytes

    model = member_model()
    write_bytes(str(path), checkpoint_bytes(model, version=version, threshold=1.0, decode={}, calibration=cal, model_name=model_name))


def write_member_rows(root: str, model: str, version: str, uri: str, camera: str, frame_scores: list[list[float]], *,
                      size: int = 1000, mtime: float = 1.7e9, clip_len: int = 4) -> None:
    """One member's scores file for one video, and its manifest entry, as `vad score` writes them (`version`: the
    checkpoint's; the rows record its identity)."""
    version = identity(version)
    batch = hand_scored(uri, model, version, "member-run", frame_scores, clip_len=clip_len, flagged=[False] * len(frame_scores),
                        reasons=[f"{model} clip {i}" for i in range(len(frame_scores))])
    decode = f"len{clip_len}-{model}"
    path = write_hand_scored(root, camera, batch, decode, dt.datetime(2026, 11, 25, tzinfo=dt.timezone.utc), size=size, mtime=mtime)
    manifest = ManifestWriter(root, "2026-11-25", "member-run")
    manifest.add(uri=uri, size=size, mtime=mtime, key=ManifestKey(uri, model, version, decode), status="scored", clips=len(frame_scores), scores_path=path)
    manifest.flush()


@pytest.fixture()
def results(tmp_path):
    """Two members (`a`, `b`: checkpoints per camera) that scored three videos of two cameras."""
    root = str(tmp_path / "results")
    models = tmp_path / "models"
    models.mkdir()
    for camera, uris in CAMERAS.items():
        member_checkpoint(models / f"a-{camera}.pt", "1", calibration(0.0, 10.0))
        member_checkpoint(models / f"b-{camera}.pt", "1", calibration(1.0, 3.0), "conv_ae-b")
        for k, uri in enumerate(uris):
            write_member_rows(root, "conv_ae", "1", uri, camera, [[1.0, 2.0, 3.0, 4.0], [5.0 + k, 6.0, 7.0, 8.0]])
            write_member_rows(root, "conv_ae-b", "1", uri, camera, [[1.0, 1.0, 1.0, 1.0], [2.0, 2.0, 3.0, 3.0 + k]])
    members = [FusionMemberConfig(model=str(models / "a-{camera}.pt"), label="a"), FusionMemberConfig(model=str(models / "b-{camera}.pt"), label="b")]
    cfg = FuseJobConfig(output=OutputConfig(uri=root), fusion=FusionConfig(members=members), mlflow=MlflowConfig(enabled=False),
                        work_dir=str(tmp_path / "work"))
    return cfg, models, tmp_path


def test_vad_fuse_writes_the_fused_rows_and_fuses_nothing_twice(results):
    cfg, models, _ = results
    summary = run_fusion(cfg, run_date="2026-11-25")
    assert not summary.errors and len(summary.files) == 3 and summary.clips == 6 and summary.model_name == "fusion(a,b)"
    _, rows = run_query(cfg.output.uri, "SELECT video_uri, clip_index, score, frame_scores, reason, model_version, threshold, clip_id "
                                        "FROM scores WHERE model_name = 'fusion(a,b)' ORDER BY video_uri, clip_index")
    assert len(rows) == 6
    uri, index, score, frames, reason, version, threshold, fused_clip = rows[1]  # a.mp4, clip 1: a 5..8 on [0, 10], b (2,2,3,3) on [1, 3]
    expected = np.array([5.0, 6.0, 7.0, 8.0]) / 10.0 + (np.array([2.0, 2.0, 3.0, 3.0]) - 1.0) / 2.0
    assert uri.endswith("a.mp4") and index == 1 and frames == pytest.approx(expected) and score == pytest.approx(expected.max())
    assert reason == "b: conv_ae-b clip 1"  # b contributed most at the worst frame: its own reason, named
    assert fused_clip == clip_id(uri, 1, 4, 4, 1)  # the first member's clips
    assert threshold == pytest.approx(fused_threshold(
        [Member("a", "", "", calibration(0.0, 10.0)), Member("b", "", "", calibration(1.0, 3.0))], "sum", 0.999), rel=1e-6)
    # a re-run fuses nothing: the same members, the same objects
    again = run_fusion(cfg, run_date="2026-11-25")
    assert again.files == [] and again.up_to_date == 3 and not again.errors


def test_a_missing_member_is_an_error_row_and_the_video_is_fused_once_it_is_there(results):
    cfg, models, _ = results
    late = "s3://archive/cam02/2026-11-24/d.mp4"
    write_member_rows(cfg.output.uri, "conv_ae", "1", late, "cam02", [[1.0, 2.0, 3.0, 4.0]])  # b has not scored it
    summary = run_fusion(cfg, run_date="2026-11-25")
    [error] = summary.errors
    assert error["uri"] == late and error["stage"] == "member" and error["error_class"] == "MemberMissing" and "b (conv_ae-b" in error["message"]
    assert len(summary.files) == 3
    _, rows = run_query(cfg.output.uri, f"SELECT count(*) FROM scores WHERE model_name = 'fusion(a,b)' AND video_uri = '{late}'")
    assert rows == [(0,)]  # never a partial fusion
    _, errors = run_query(cfg.output.uri, f"SELECT stage, error_class FROM errors WHERE uri = '{late}'")
    assert errors == [("member", "MemberMissing")]
    write_member_rows(cfg.output.uri, "conv_ae-b", "1", late, "cam02", [[1.0, 1.0, 1.0, 1.0]])
    later = run_fusion(cfg, run_date="2026-11-26")
    assert len(later.files) == 1 and later.up_to_date == 3 and not later.errors


def test_a_re_scored_member_re_fuses_only_its_videos(results):
    cfg, models, _ = results
    first = run_fusion(cfg, run_date="2026-11-25")
    assert len(first.files) == 3
    # the video b.mp4 changed and both members scored the new copy: that video alone is fused again
    changed = CAMERAS["cam01"][1]
    write_member_rows(cfg.output.uri, "conv_ae", "1", changed, "cam01", [[9.0, 9.0, 9.0, 9.0]], size=2000, mtime=1.8e9)
    only_a = plan_fusion(cfg)  # b has not scored the new copy yet: the members disagree, said so
    assert [(e["uri"], e["error_class"]) for e in only_a.errors] == [(changed, "MemberStale")] and not only_a.todo
    write_member_rows(cfg.output.uri, "conv_ae-b", "1", changed, "cam01", [[1.0, 1.0, 1.0, 1.0]], size=2000, mtime=1.8e9)
    assert [t.uri for t in plan_fusion(cfg).todo] == [changed]
    run_fusion(cfg, run_date="2026-11-26")
    # cam02's b model has a new version (a new champion): cam02's videos alone are fused again, by a new fused version
    member_checkpoint(models / "b-cam02.pt", "2", calibration(1.0, 5.0), "conv_ae-b")
    write_member_rows(cfg.output.uri, "conv_ae-b", "2", CAMERAS["cam02"][0], "cam02", [[1.0, 1.0, 1.0, 1.0], [2.0, 2.0, 3.0, 3.0]])
    plan = plan_fusion(cfg)
    assert [t.uri for t in plan.todo] == CAMERAS["cam02"] and plan.up_to_date == 2
    assert plan.cameras["cam02"].version != plan.cameras["cam01"].version
    manifest = read_manifest(cfg.output.uri)
    assert sum(k.model_name == "fusion(a,b)" and k.decode == DECODE for k in manifest) == 3  # a video's copies share its key


def test_a_member_without_a_calibration_is_said_plainly(results):
    cfg, models, _ = results
    member_checkpoint(models / "a-cam02.pt", "1", None)  # trained before calibrations were recorded
    summary = run_fusion(cfg, run_date="2026-11-25")
    assert len(summary.files) == 2  # cam01 is fused all the same
    [error] = summary.errors
    assert error["stage"] == "member" and error["error_class"] == "MemberUnavailable"
    assert "records no calibration" in error["message"] and "train it again" in error["message"]


def test_vad_fuse_on_the_command_line(results, capsys):
    import json

    import yaml

    from vad.cli import main

    cfg, _, tmp_path = results
    write_member_rows(cfg.output.uri, "conv_ae", "1", "s3://archive/cam02/2026-11-24/late.mp4", "cam02", [[1.0, 2.0, 3.0, 4.0]])
    data = cfg.model_dump(mode="json")
    data["storage"].pop("access_key_id"), data["storage"].pop("secret_access_key")
    path = tmp_path / "fuse.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["fuse", "--config", str(path), "--date", "2026-11-25", "--set", "run.max_failure_rate=0.5"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["files"], printed["clips"], printed["errors"], printed["model_name"]) == (3, 6, 1, "fusion(a,b)")
    assert printed["errors_by_stage"] == {"member": 1}
    # the late video is still not fusable: with no failures allowed the command says so and exits 3
    assert main(["fuse", "--config", str(path), "--set", "run.max_failure_rate=0"]) == 3
    assert "could not be fused" in capsys.readouterr().err


def test_a_member_file_of_an_older_schema_version_is_fused(results):
    """Files written before `reason` (schema 5) and `model_fallback` (schema 4) existed: read with nulls."""
    import pyarrow.parquet as pq

    cfg, _, _ = results
    for path in Path(cfg.output.uri, "scores").rglob("*.parquet"):
        table = pq.read_table(path)
        old = table.drop_columns(["reason", "model_fallback"]).replace_schema_metadata(table.schema.metadata)
        pq.write_table(old, path)
    summary = run_fusion(cfg, run_date="2026-11-25")
    assert not summary.errors and len(summary.files) == 3
    _, rows = run_query(cfg.output.uri, "SELECT reason FROM scores WHERE model_name = 'fusion(a,b)' ORDER BY video_uri, clip_index LIMIT 2")
    assert rows[1][0].startswith("b: ") and "its normal" in rows[1][0]  # no member reason to carry: the member and how far
