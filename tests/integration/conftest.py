"""One local Ray, one S3 server on loopback and one trained model, shared by the integration tests."""

import numpy as np
import pytest
from helpers import DECODE

from vad.config import SourceConfig
from vad.testing.s3server import start_local_s3, upload_folder
from vad.testing.synthetic import generate_dataset


@pytest.fixture(scope="session")
def ray_local():
    """The tests' local Ray (2 CPUs), started before any job in this process could start its own."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
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
def checkpoint(ray_local, s3, archive, tmp_path_factory):
    from vad.config import MlflowConfig, TrainJobConfig, TrainLoopConfig, TrainModelConfig, TrainOutputConfig
    from vad.training.job import run_training

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
    summary = run_training(cfg)
    return {"uri": summary.checkpoint, "summary": summary, "work": work}
