"""One local Ray, one S3 server on loopback and one trained model, shared by the integration tests."""

import numpy as np
import pytest
from helpers import DECODE, LOCAL_RAY

from vad.config import SourceConfig
from vad.testing.s3server import start_local_s3, upload_folder
from vad.testing.synthetic import generate_dataset


@pytest.fixture(scope="session")
def ray_local():
    """The tests' local Ray (2 CPUs, a 2 GB object store), started before any job in this
    process could start its own."""
    import ray

    ray.init(address="local", **LOCAL_RAY)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3():
    server = start_local_s3()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def archive(s3, tmp_path_factory):
    """A synthetic archive in s3://archive/footage: 2 cameras, normal training videos and test videos with anomalies."""
    folder, masks = tmp_path_factory.mktemp("archive"), tmp_path_factory.mktemp("pixel-truth")
    videos = generate_dataset(folder, cameras=2, train_per_camera=2, test_per_camera=1, num_frames=120, seed=3, masks_dir=masks)
    (folder / "labels.json").unlink()
    upload_folder(s3, str(folder), "archive", "footage")
    return {"uri": "s3://archive/footage", "videos": videos, "labels": {v.key: np.array(v.labels) for v in videos}, "masks": masks}


@pytest.fixture(scope="session")
def checkpoint(s3, archive, tmp_path_factory):
    """The suite's conv_ae, as `vad train` makes one but learned in this process (`vad.training.local.fit`, the
    learner a fleet camera runs; test_training covers the Ray Train path): its checkpoint written to
    s3://models and registered in MLflow as vad-conv-ae@champion in its work folder."""
    from vad.config import MlflowConfig, TrainJobConfig, TrainLoopConfig, TrainModelConfig, TrainOutputConfig
    from vad.models.scorers import build_scorer
    from vad.tracking.runs import mlflow_run
    from vad.training.data import decode_clips
    from vad.training.job import model_hparams, register_and_write, run_params, training_videos
    from vad.training.local import fit
    from vad.training.split import split_videos

    work = tmp_path_factory.mktemp("train-work")
    cfg = TrainJobConfig(
        source=SourceConfig(uri=archive["uri"]),
        output=TrainOutputConfig(checkpoint="s3://models/conv_ae/test.pt", version="t1"),
        model=TrainModelConfig(name="conv_ae", hparams={"widths": [32, 16, 8]}),
        train=TrainLoopConfig(epochs=12, batch_size=16, lr=3e-3, key_regex="/train_", device="cpu"),
        decode=DECODE.model_copy(update={"stride": 2}),
        storage=s3.storage_config(),
        mlflow=MlflowConfig(experiment="test-train"),
        work_dir=str(work),
    )
    s3.client().create_bucket(Bucket="models")
    videos = training_videos(cfg)
    train_videos, val_videos = split_videos(videos, cfg.train.val_fraction)
    hparams, loop = model_hparams(cfg), cfg.train
    trained = fit(build_scorer(cfg.model.name, **hparams), decode_clips(train_videos, cfg), epochs=loop.epochs, batch_size=loop.batch_size,
                  lr=loop.lr, weight_decay=loop.weight_decay, seed=loop.seed, threshold_quantile=loop.threshold_quantile,
                  val_clips=decode_clips(val_videos, cfg))
    with mlflow_run(cfg.mlflow, cfg.work_dir, "suite-conv-ae", {"vad.job": "train"}) as tracker:
        tracker.log_params(run_params(cfg, hparams, len(videos)))
        tracker.log_metrics(trained.logged_metrics())
        registered, uri = register_and_write(tracker, cfg, trained)
    assert registered.promoted
    return {"uri": uri, "trained": trained, "work": work}
