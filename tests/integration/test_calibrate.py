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
    from mlflow.tracking import MlflowClient

    from vad.fusion.calibrate import run_calibration
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
    held_out = SourceConfig(uri=archive["uri"], include=("cam01/*/train_*",))
    cfg = ScoreJobConfig(
        source=held_out, output=OutputConfig(uri=str(tmp_path / "unused")), decode=DECODE, storage=storage,
        scorer=ScorerConfig(name="conv_ae", checkpoint=old, batch_size=4, device="cpu"),
        mlflow=MlflowConfig(experiment="test-calibrate"), work_dir=str(checkpoint["work"]),
    )
    assert main(["calibrate", "--config", str(write_yaml(cfg, tmp_path / "score.yaml")), "--source", archive["uri"],
                 "--set", 'source.include=["cam01/*/train_*"]']) == 0
    [printed] = json.loads(capsys.readouterr().out)
    recorded = read_checkpoint_record(old, storage).calibration
    assert printed["recorded_in"] == old and recorded is not None and printed["frames"] == recorded.frames
    # the frames of cam01's two training videos, as the scoring job cut them: every clip's every frame
    scratch = next((checkpoint["work"] / "calibrate").iterdir())
    _, rows = run_query(str(scratch), "SELECT count(*) * 8, count(DISTINCT video_uri), min(list_min(frame_scores)) FROM scores")
    frames, videos, low = rows[0]
    assert recorded.frames == frames and videos == 2 and recorded.low == np.float32(low)
    assert not (tmp_path / "unused").exists()  # the nightly results are not touched

    # a registered model: the tag, not its checkpoint (as registered), receives it
    tracking = tracking_uri(cfg.mlflow, cfg.work_dir)
    location, name, version = resolve_model("models:/vad-conv-ae@champion", tracking, cfg.work_dir)
    before = read_bytes(location, storage)
    registered = cfg.model_copy(update={"scorer": cfg.scorer.model_copy(update={"checkpoint": "models:/vad-conv-ae@champion"})})
    try:
        [done] = run_calibration(registered, held_out.uri)
        assert (done.name, done.version, done.recorded_in) == (name, version, "registry tag")
        assert registered_calibration(name, version, tracking) == done.calibration
        assert read_bytes(location, storage) == before
    finally:
        MlflowClient(tracking).delete_model_version_tag(name, version, "vad.calibration")
