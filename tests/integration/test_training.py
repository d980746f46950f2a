"""Training through Ray Train: 2 workers, checkpoints, recovery, MLflow tracking and registry."""

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import DECODE, budget_threshold_holds

from vad.config import (
    DistributedConfig,
    MlflowConfig,
    SourceConfig,
    TrainAlertsConfig,
    TrainJobConfig,
    TrainLoopConfig,
    TrainModelConfig,
    TrainOutputConfig,
)
from vad.models.checkpoint import load_checkpoint
from vad.training.job import run_training

EPOCHS = 4


def _config(s3, archive, work, name: str, **distributed) -> TrainJobConfig:
    return TrainJobConfig(
        source=SourceConfig(uri=archive["uri"]),
        output=TrainOutputConfig(checkpoint=str(work / f"{name}.pt"), version=name),
        model=TrainModelConfig(name="conv_ae", hparams={"widths": [16, 8, 8]}),
        train=TrainLoopConfig(epochs=EPOCHS, batch_size=8, lr=3e-3, key_regex="/train_", val_fraction=0.25, device="cpu"),
        distributed=DistributedConfig(num_workers=2, cpus_per_worker=0.5, **distributed),
        decode=DECODE.model_copy(update={"stride": 4}),
        storage=s3.storage_config(),
        mlflow=MlflowConfig(experiment="test-ray-train"),
        run_name=name,
        work_dir=str(work),
        # the threshold from a false-alarm budget on the held-out video (4.8 s: ~2.7 events allowed, so some are raised)
        alerts=TrainAlertsConfig(max_false_per_hour=2000.0, merge_gap_s=0.0),
    )


def _weights(path: str) -> dict:
    return load_checkpoint(path).model.state_dict()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("ray-train")


@pytest.fixture(scope="module")
def baseline(ray_local, s3, archive, work):
    cfg = _config(s3, archive, work, "baseline")
    return cfg, run_training(cfg)


def test_two_workers_train_and_the_loss_falls(baseline):
    import ray

    cfg, summary = baseline
    # Training keeps its clips in order through its datasets' own settings, not the process's.
    assert ray.data.DataContext.get_current().execution_options.preserve_order is False
    losses = [row["train/loss"] for row in summary.result.history]
    assert [row["epoch"] for row in summary.result.history] == list(range(EPOCHS))
    assert losses[-1] < 0.7 * losses[0], losses
    assert np.isfinite(summary.result.history[-1]["val/loss"])
    assert summary.clips > 0 and np.isfinite(summary.result.threshold)
    assert load_checkpoint(summary.checkpoint).threshold == pytest.approx(summary.result.threshold)


def test_the_threshold_comes_from_the_false_alarm_budget_on_ray_train(baseline):
    from mlflow.tracking import MlflowClient

    from vad.tracking.runs import tracking_uri

    cfg, summary = baseline
    budget_threshold_holds(summary.checkpoint, MlflowClient(tracking_uri(cfg.mlflow, cfg.work_dir)).get_run(summary.mlflow_run_id).data.metrics)


def test_mlflow_holds_params_metrics_artifacts_and_the_registered_model(baseline):
    from mlflow.tracking import MlflowClient

    from vad.tracking.registry import resolve_model_uri
    from vad.tracking.runs import tracking_uri

    cfg, summary = baseline
    client = MlflowClient(tracking_uri(cfg.mlflow, cfg.work_dir))
    run = client.get_run(summary.mlflow_run_id)
    params = run.data.params
    assert params["model.name"] == "conv_ae" and params["distributed.num_workers"] == "2"
    assert params["train.epochs"] == str(EPOCHS) and params["decode.clip_len"] == str(DECODE.clip_len)
    assert not any("secret" in key or "access_key" in key for key in params)
    for key in ("train/loss", "val/loss"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert steps == list(range(EPOCHS)), (key, steps)  # rank 0 logs once per epoch
    assert {"train/threshold", "train/seconds"} <= set(run.data.metrics)
    version = client.get_model_version_by_alias("vad-conv-ae", "champion")
    assert version.run_id == run.info.run_id and summary.registered.promoted
    stored = resolve_model_uri("models:/vad-conv-ae@champion", tracking_uri(cfg.mlflow, cfg.work_dir), cfg.work_dir)
    assert Path(stored).is_file() and Path(stored).read_bytes() == Path(summary.checkpoint).read_bytes()


def test_registered_model_scores_exactly_like_the_in_memory_one(baseline, archive, s3):
    import mlflow

    from vad.io.sources import list_videos
    from vad.tracking.registry import resolve_model_uri
    from vad.tracking.runs import tracking_uri
    from vad.video.clips import iter_clips

    cfg, summary = baseline
    uri = tracking_uri(cfg.mlflow, cfg.work_dir)
    in_memory = load_checkpoint(summary.checkpoint).model
    registered = load_checkpoint(resolve_model_uri("models:/vad-conv-ae@champion", uri, cfg.work_dir)).model
    videos, _ = list_videos(SourceConfig(uri=archive["uri"]), s3.storage_config())
    clips = np.stack([c.frames for c in iter_clips(videos[0], DECODE, s3.storage_config())]).astype(np.float32) / 255
    with torch.inference_mode():
        expected = in_memory.score(torch.from_numpy(clips)).score.numpy()
        assert np.array_equal(registered.score(torch.from_numpy(clips)).score.numpy(), expected)
    mlflow.set_tracking_uri(uri)
    pyfunc = mlflow.pyfunc.load_model("models:/vad-conv-ae@champion")
    assert np.array_equal(pyfunc.predict(clips), expected)
    assert list(pyfunc.metadata.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, DECODE.clip_len, *DECODE.resize]

    # The nightly job takes the registry URI as its checkpoint.
    import pyarrow.dataset as pads

    from vad.config import OutputConfig, ScoreJobConfig, ScorerConfig
    from vad.results.schema import PARTITION_SCHEMA
    from vad.scoring.job import run_scoring

    out = Path(cfg.work_dir) / "scored-by-registry"
    run_scoring(
        ScoreJobConfig(
            source=SourceConfig(uri=videos[0].uri.rsplit("/", 1)[0]), output=OutputConfig(uri=str(out)),
            scorer=ScorerConfig(checkpoint="models:/vad-conv-ae@champion", device="cpu"), decode=DECODE,
            storage=s3.storage_config(), mlflow=cfg.mlflow, work_dir=cfg.work_dir,
        )
    )
    table = pads.dataset(str(out / "scores"), partitioning=pads.partitioning(PARTITION_SCHEMA, flavor="hive")).to_table().to_pandas()
    first = table[table["video_uri"] == videos[0].uri].sort_values("clip_index")
    assert np.allclose(first["score"].to_numpy(), expected, atol=1e-6)


def fail_once_after(epoch: int, marker: Path):
    """An epoch callback that makes a worker raise once after `epoch` (the marker file remembers)."""

    def callback(metrics: dict) -> None:
        if metrics["epoch"] == epoch and not marker.exists():
            marker.write_text("failed once")
            raise RuntimeError(f"injected failure after epoch {epoch}")

    return callback


def kill_once_committed(epoch: int, run_folder: Path, marker: Path):
    """An epoch callback that SIGKILLs its worker's process once after `epoch`, when the controller has
    committed that epoch's checkpoint (a checkpoint folder exists before the controller has registered the
    report; only what its snapshot lists survives a kill). A marker per rank remembers the kill."""

    def callback(metrics: dict) -> None:
        import json
        import os
        import signal
        import time

        import ray.train

        mine = marker.with_name(f"{marker.name}-{ray.train.get_context().get_world_rank()}")
        if metrics["epoch"] != epoch or mine.exists():
            return
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                results = json.loads((run_folder / "checkpoint_manager_snapshot.json").read_text())["checkpoint_results"]
                if epoch in [int(r["metrics"]["epoch"]) for r in results]:
                    break
            except (FileNotFoundError, json.JSONDecodeError, KeyError):
                pass
            time.sleep(0.05)
        else:
            raise RuntimeError(f"epoch {epoch}'s checkpoint was never committed")
        mine.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)

    return callback


def test_a_run_restarts_after_a_kill_stops_after_a_failure_and_once_stopped_resumes_and_ends_the_same(baseline, s3, archive, work):
    """Every way a run is interrupted, in one run allowed one failure (`max_failures=1`): once epoch 0's
    checkpoint is committed the Ray Train worker processes SIGKILL themselves (a real kill, not an exception)
    and the group restarts from it; a worker raises after epoch 1, a second failure, and the run stops.
    The restart did not train from scratch. Started again with the same name and storage, the run resumes
    from epoch 1's checkpoint and trains only epochs 2 and 3; started once more it is refused as finished.
    The model ends as the uninterrupted baseline's."""
    from mlflow.tracking import MlflowClient

    from vad.tracking.runs import tracking_uri

    cfg = _config(s3, archive, work, "interrupted", max_failures=1)
    killed, raised_1 = work / "interrupted.killed", work / "interrupted.failed-1"
    callbacks = [kill_once_committed(0, work / "ray-train" / "interrupted", killed), fail_once_after(1, raised_1)]
    with pytest.raises(Exception, match="injected failure after epoch 1"):
        run_training(cfg, epoch_callbacks=callbacks)
    assert raised_1.exists(), "a worker should have raised after epoch 1"
    # each worker SIGKILLs itself once epoch 0 is committed; Ray may take the group down before the second does
    assert 1 <= len(list(work.glob(f"{killed.name}-*"))) <= 2, "a worker should have been SIGKILLed once"
    client = MlflowClient(tracking_uri(cfg.mlflow, cfg.work_dir))
    [stopped] = client.search_runs([client.get_experiment_by_name(cfg.mlflow.experiment).experiment_id],
                                   "attributes.run_name = 'interrupted' AND attributes.status = 'FAILED'")
    # each epoch ran once: the restart went on from the checkpoint just committed
    assert [m.step for m in client.get_metric_history(stopped.info.run_id, "train/loss")] == [0, 1]

    resumed = run_training(cfg)  # same run name and storage: Ray Train picks up the checkpoint
    assert [row["epoch"] for row in resumed.result.history] == list(range(EPOCHS))
    assert [m.step for m in client.get_metric_history(resumed.mlflow_run_id, "train/loss")] == [2, 3]  # only epochs 2 and 3 ran again
    with pytest.raises(ValueError, match="has already finished"):
        run_training(cfg)  # a finished run is not silently "resumed" into the same model
    reference = _weights(baseline[1].checkpoint)
    for key, value in _weights(resumed.checkpoint).items():
        assert torch.allclose(value, reference[key], atol=1e-6), key


def test_the_alias_moves_only_to_a_better_model(baseline):
    from mlflow.tracking import MlflowClient

    from vad.config import RegistryConfig
    from vad.tracking.runs import mlflow_run, tracking_uri

    cfg, summary = baseline
    data = open(summary.checkpoint, "rb").read()
    registry = RegistryConfig(model_name="vad-alias-test")
    shape = (DECODE.clip_len, *DECODE.resize)
    outcomes = []
    for metric in (0.5, 0.7, 0.3):  # first, worse, better (val/loss: lower is better)
        with mlflow_run(cfg.mlflow, cfg.work_dir, "alias") as tracker:
            tracker.log_metric("val/loss", metric)
            outcomes.append(tracker.register(data, registry, "conv_ae", shape, metric))
    assert [o.promoted for o in outcomes] == [True, False, True]
    client = MlflowClient(tracking_uri(cfg.mlflow, cfg.work_dir))
    assert str(client.get_model_version_by_alias("vad-alias-test", "champion").version) == outcomes[2].version


def note_epochs(folder: Path):
    """An epoch callback leaving a file per worker and epoch (a closure: Ray ships it by value)."""

    def callback(metrics: dict) -> None:
        import uuid

        (folder / f"{metrics['epoch']}-{uuid.uuid4().hex}").touch()

    return callback


def test_vad_train_trains_the_mil_ranker_on_weak_labels(ray_local, s3, archive, tmp_path):
    """`vad train` with model mil: I3D features by Ray Data, bags, the head on two Ray Train workers (each
    drawing its own pairs; the epoch callbacks, the epoch bar's feed, run on both), held-out validation of
    both classes, a self-contained checkpoint, MLflow and the registry. That the loop learns to rank bags is
    checked in one process on bags with a planted signal (test_scorers: the same `mil_epoch`)."""
    import mlflow

    from vad.models.scorers.mil.model import MILScorer

    decode = DECODE.model_copy(update={"clip_len": 16, "stride": 8, "resize": (32, 32), "grayscale": False})
    cfg = TrainJobConfig(
        source=SourceConfig(uri=archive["uri"]),
        output=TrainOutputConfig(checkpoint=str(tmp_path / "mil.pt"), version="mil-t"),
        model=TrainModelConfig(name="mil", hparams={"extractor": "i3d"}),
        train=TrainLoopConfig(epochs=3, steps_per_epoch=4, batch_size=4, lr=1e-2, anomalous_regex="/test_", val_fraction=0.5, device="cpu"),
        distributed=DistributedConfig(num_workers=2, cpus_per_worker=0.5),
        decode=decode,
        storage=s3.storage_config(),
        mlflow=MlflowConfig(experiment="test-mil-train"),
        run_name="mil-weak",
        work_dir=str(tmp_path),
    )
    seen = tmp_path / "epochs"
    seen.mkdir()
    summary = run_training(cfg, epoch_callbacks=[note_epochs(seen)])
    assert [row["epoch"] for row in summary.result.history] == [0, 1, 2]
    assert len(list(seen.iterdir())) == 6  # both workers, every epoch
    loaded = load_checkpoint(summary.checkpoint)
    assert isinstance(loaded.model, MILScorer) and loaded.version == "mil-t" and np.isfinite(loaded.threshold)
    with torch.inference_mode():
        scores = loaded.model.score(torch.rand(2, 16, 32, 32, 3)).score
    assert scores.shape == (2,) and torch.all((scores >= 0) & (scores <= 1))
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}")
    run = client.get_run(summary.mlflow_run_id)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [0, 1, 2]
    assert 0 <= run.data.metrics["val/auc"] <= 1 and np.isfinite(run.data.metrics["val/loss"])
    assert run.data.metrics["train/bags_val_anomalous"] == 1 and run.data.metrics["train/bags_train_normal"] == 2
    assert run.data.params["train.anomalous_regex"] == "/test_"
    assert summary.registered.version == "1" and summary.registered.promoted
    with pytest.raises(ValueError, match="anomalous_regex"):
        run_training(cfg.model_copy(update={"train": cfg.train.model_copy(update={"anomalous_regex": None}), "run_name": "mil-unlabelled"}))


def test_a_run_the_cluster_cannot_hold_is_refused_before_it_starts(ray_local, s3, archive, work):
    """2 workers of 1 CPU and a decode task on a 2-CPU Ray: the decode tasks would wait forever."""
    cfg = _config(s3, archive, work, "too-big")
    cfg = cfg.model_copy(update={"distributed": cfg.distributed.model_copy(update={"cpus_per_worker": 1.0})})
    with pytest.raises(ValueError, match=r"training needs 3 CPUs, the cluster has 2 .*lower distributed.num_workers"):
        run_training(cfg)
    assert not (work / "ray-train" / "too-big").exists(), "nothing started"
