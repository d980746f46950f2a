"""A fitted scorer through the platform: `vad train` fits patch_knn's memory bank with Ray Data
actors (two here), registers it in MLflow like a trained model, the nightly job scores with it and
writes its heat maps and masks; a fleet fits one bank per camera."""

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import DECODE, budget_threshold_holds

from vad.config import (
    DistributedConfig,
    MlflowConfig,
    OutputConfig,
    ScoreJobConfig,
    ScorerConfig,
    SourceConfig,
    TrainJobConfig,
    TrainAlertsConfig,
    TrainLoopConfig,
    TrainModelConfig,
    TrainOutputConfig,
)
from vad.models.checkpoint import load_checkpoint
from vad.models.scorers import scorer_meta
from vad.results.sql import run_query
from vad.scoring.job import run_scoring
from vad.training.job import run_training

HPARAMS = {**scorer_meta("patch_knn").tiny.hparams, "bank_size": 200, "max_candidates": 4000}


def _config(s3, source: str, work: Path, checkpoint: str = "knn.pt", **train) -> TrainJobConfig:
    return TrainJobConfig(
        source=SourceConfig(uri=source),
        output=TrainOutputConfig(checkpoint=str(work / checkpoint), version="k1"),
        model=TrainModelConfig(name="patch_knn", hparams=HPARAMS),
        train=TrainLoopConfig(**{"key_regex": "/train_", "val_fraction": 0.25, "device": "cpu", **train}),
        distributed=DistributedConfig(num_workers=2, cpus_per_worker=0.5),
        decode=DECODE,
        storage=s3.storage_config(),
        mlflow=MlflowConfig(experiment="test-patch-knn"),
        work_dir=str(work),
        alerts=TrainAlertsConfig(max_false_per_hour=2000.0, merge_gap_s=0.0),  # the threshold from a false-alarm budget
    )


@pytest.fixture(scope="module")
def fitted(ray_local, s3, archive, tmp_path_factory):
    work = tmp_path_factory.mktemp("patch-knn")
    cfg = _config(s3, archive["uri"], work)
    return cfg, run_training(cfg), work


def test_vad_train_fits_the_bank_with_ray_data_and_registers_it(fitted):
    import mlflow

    from vad.tracking.runs import tracking_uri

    cfg, summary, work = fitted
    loaded = load_checkpoint(summary.checkpoint)
    model = loaded.model
    assert loaded.name == "patch_knn" and len(model.bank) == HPARAMS["bank_size"]
    assert model.position_mean.shape == (DECODE.resize[0] // 8, DECODE.resize[1] // 8)  # Mixed_3c's grid
    assert np.isfinite(loaded.threshold) and np.isfinite(loaded.metrics["val/loss"])
    assert len(summary.result.history) == 1  # one pass, no epochs
    # 4 training videos of 120 frames, 8-frame clips back to back: 3 fit the bank, 1 is held out.
    assert summary.clips == 3 * 120 // DECODE.clip_len
    client = mlflow.tracking.MlflowClient(tracking_uri(cfg.mlflow, cfg.work_dir))  # its own database, whatever ran before
    run = client.get_run(summary.mlflow_run_id)
    assert run.data.metrics["train/bank_patches"] == HPARAMS["bank_size"]
    assert summary.registered is not None and summary.registered.promoted
    # Ray Data's fitting path sets the threshold from the false-alarm budget on the held-out video, as Ray Train's does
    budget_threshold_holds(summary.checkpoint, run.data.metrics)


@pytest.fixture(scope="module")
def eager_night(fitted, s3, archive, tmp_path_factory):
    """cam01's night scored by the fitted bank saved with a threshold below any score (the same weights, so the
    same scores; every clip flagged, so each of the camera's 3 videos is one event for the review page)."""
    from vad.models.checkpoint import save_checkpoint

    _, summary, _ = fitted
    tmp = tmp_path_factory.mktemp("patch-knn-night")
    loaded = load_checkpoint(summary.checkpoint)
    eager = str(tmp / "eager.pt")
    save_checkpoint(eager, loaded.model, version="eager", threshold=-1e9, decode=loaded.decode)
    job = ScoreJobConfig(
        source=SourceConfig(uri=f"{archive['uri']}/cam01"), output=OutputConfig(uri=str(tmp / "results")),
        scorer=ScorerConfig(name="patch_knn", checkpoint=eager, batch_size=4, device="cpu"), decode=DECODE,
        storage=s3.storage_config(), mlflow=MlflowConfig(enabled=False), work_dir=str(tmp / "work"),
    )
    return job, run_scoring(job), loaded.model


def test_the_nightly_job_scores_with_the_bank_and_writes_heat_maps(eager_night):
    job, scored, model = eager_night
    out = job.output.uri
    assert scored.clips > 0 and not scored.errors
    _, rows = run_query(out, "SELECT count(*), count(DISTINCT m.clip_id), max(s.score) FROM masks m JOIN scores s USING (clip_id)")
    assert rows[0][:2] == (scored.clips, scored.clips) and np.isfinite(rows[0][2])
    # The stored scores are the checkpoint's own scores of those clips.
    from vad.io.sources import list_videos
    from vad.video.clips import iter_clips

    video = next(v for v in list_videos(job.source, job.storage, run_date="2026-11-24")[0] if "/test_" in v.uri)
    clips = np.stack([c.frames for c in iter_clips(video, DECODE, job.storage)])
    with torch.inference_mode():
        expected = model.score(torch.from_numpy(clips).float() / 255).score.numpy()
    _, stored = run_query(out, f"SELECT score FROM scores WHERE video_uri = '{video.uri}' ORDER BY clip_index")
    assert np.allclose([s for (s,) in stored], expected, rtol=1e-4, atol=1e-4)


def test_a_fleet_fits_one_bank_per_camera(ray_local, archive, s3, tmp_path):
    from vad.training.fleet import run_fleet_training

    cfg = _config(s3, archive["uri"], tmp_path, "{camera}.pt", per_camera=True, min_camera_clips=4, val_fraction=0.5)
    summary = run_fleet_training(cfg)
    assert [row["status"] for row in summary.rows] == ["trained", "trained"]
    banks = [load_checkpoint(str(tmp_path / f"{camera}.pt")) for camera in ("cam01", "cam02")]
    assert [b.model_name for b in banks] == ["vad-patch-knn.cam01", "vad-patch-knn.cam02"]
    assert all(len(b.model.bank) == HPARAMS["bank_size"] for b in banks)
    assert not torch.equal(banks[0].model.bank, banks[1].model.bank)


def test_the_review_page_lays_the_heat_maps_over_the_previews(eager_night, s3, tmp_path):
    """A localising scorer's night: every card of the review page carries its heat map."""
    from vad.review.report import run_report

    job, scored, _ = eager_night
    out = job.output.uri
    page = run_report(out, storage=s3.storage_config(), top_k=3, out_dir=tmp_path / "pages")
    assert page.flagged == scored.clips and page.shown == 3 and not page.previews_failed
    html = Path(page.path).read_text()
    assert page.events == 3 and html.count("overlaid on the peak clip (red), mask outlined (yellow)") == 3
    assert html.count("data:image/webp;base64,") == 3
