"""`vad calibrate`: a model trained before calibrations were recorded scores held-out normal videos as the
nightly job would, and its calibration lands where fusion reads it: in the checkpoint (a model scored by
path), or as the registered version's tag (a model scored from the registry)."""

import io
import json

import numpy as np
import torch
from helpers import DECODE, write_yaml

from vad.cli import main
from vad.config import MlflowConfig, OutputConfig, ScoreJobConfig, ScorerConfig, SourceConfig
from vad.io.storage import read_bytes, write_bytes
from vad.models.checkpoint import read_checkpoint_record
from vad.results.sql import run_query


def test_vad_calibrate_records_a_calibration_in_the_checkpoint_and_in_the_registry(ray_local, s3, archive, checkpoint, tmp_path, capsys):
    """One `vad calibrate` over a fleet of two models, one scored by path (cam01) and one from the registry (cam02):
    each model's calibration lands where it is read from, and the held-out videos are scored once."""
    from mlflow.tracking import MlflowClient

    from vad.tracking.registry import registered_calibration, resolve_model
    from vad.tracking.runs import tracking_uri

    storage = s3.storage_config()
    payload = torch.load(io.BytesIO(read_bytes(checkpoint["uri"], storage)), weights_only=True)
    payload.pop("calibration")  # as checkpoints were before they were recorded
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    old = "s3://models/conv_ae/old.pt"
    write_bytes(old, buffer.getvalue(), storage)
    assert read_checkpoint_record(old, storage).calibration is None
    cfg = ScoreJobConfig(
        source=SourceConfig(uri=archive["uri"]), output=OutputConfig(uri=str(tmp_path / "unused")), decode=DECODE, storage=storage,
        scorer=ScorerConfig(name="conv_ae", checkpoint=old, cameras={"cam02": "models:/vad-conv-ae@champion"}, batch_size=4, device="cpu"),
        mlflow=MlflowConfig(experiment="test-calibrate"), work_dir=str(checkpoint["work"]),
    )
    # the registered model: the tag, not its checkpoint (as registered), receives it
    tracking = tracking_uri(cfg.mlflow, cfg.work_dir)
    location, name, version = resolve_model("models:/vad-conv-ae@champion", tracking, cfg.work_dir)
    before = read_bytes(location, storage)
    try:
        assert main(["calibrate", "--config", str(write_yaml(cfg, tmp_path / "score.yaml")), "--source", archive["uri"],
                     "--set", 'source.include=["*/*/train_*"]']) == 0
        printed = {row["recorded_in"]: row for row in json.loads(capsys.readouterr().out)}
        assert set(printed) == {old, "registry tag"}, printed
        # by path: the checkpoint receives it, from the frames of cam01's two training videos as the scoring job cut them
        recorded = read_checkpoint_record(old, storage).calibration
        assert recorded is not None and printed[old]["frames"] == recorded.frames
        scratch = next((checkpoint["work"] / "calibrate").iterdir())
        _, rows = run_query(str(scratch), "SELECT count(*) * 8, count(DISTINCT video_uri), min(list_min(frame_scores)) FROM scores "
                                          "WHERE camera = 'cam01'")
        frames, videos, low = rows[0]
        assert recorded.frames == frames and videos == 2 and recorded.low == np.float32(low)
        assert not (tmp_path / "unused").exists()  # the nightly results are not touched
        # from the registry: the version's tag, from cam02's videos
        registered = printed["registry tag"]
        assert (registered["model"], registered["version"]) == (name, version)
        tagged = registered_calibration(name, version, tracking)
        _, rows = run_query(str(scratch), "SELECT count(*) * 8, count(DISTINCT video_uri), min(list_min(frame_scores)) FROM scores "
                                          "WHERE camera = 'cam02'")
        frames, videos, low = rows[0]
        assert tagged.frames == registered["frames"] == frames and videos == 2 and tagged.low == np.float32(low)
        assert read_bytes(location, storage) == before
    finally:
        MlflowClient(tracking).delete_model_version_tag(name, version, "vad.calibration")
