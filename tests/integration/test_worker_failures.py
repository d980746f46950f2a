"""Workers, actors and whole nodes die mid-run: the job still writes every clip exactly once."""

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from helpers import DAY, DECODE, LOCAL_RAY, actor_pids, assert_exactly_once, job_config, put

from vad.config import MlflowConfig, RayConfig
from vad.models.checkpoint import decode_record, save_checkpoint
from vad.scoring.job import run_scoring
from vad.testing.synthetic import encode_mp4, render_scene

VIDEOS, FRAMES = 20, 240


@pytest.fixture(scope="module")
def long_archive(s3, tmp_path_factory):
    """Videos on two cameras, enough for a kill to land while the job runs."""
    import torch

    from vad.models.scorers import build_scorer

    s3.client().create_bucket(Bucket="long")
    video = encode_mp4(render_scene(31, FRAMES, height=64, width=96).frames)
    frames = {}
    for i in range(VIDEOS):
        key = f"footage/cam0{i % 2}/{DAY}/v{i:02d}.mp4"
        put(s3, "long", key, video)
        frames[f"s3://long/{key}"] = FRAMES
    torch.manual_seed(0)
    checkpoint = str(tmp_path_factory.mktemp("untrained") / "conv_ae.pt")
    model = build_scorer("conv_ae", clip_len=DECODE.clip_len, widths=[16, 8, 4]).eval()
    save_checkpoint(checkpoint, model, version="u1", threshold=0.0, decode=decode_record(DECODE))
    return {"uri": "s3://long/footage", "frames": frames, "checkpoint": checkpoint}


def when_results_appear(folder: Path, action, timeout_s: float = 240) -> threading.Thread:
    """Run `action` in the background as soon as the first result file shows up under `folder`."""
    def watch():
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if list(folder.rglob("video-*.parquet")):
                action()
                return
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def cut_short_once(monkeypatch, after_rows: int) -> list[int]:
    """Make the job's first pass end with an ActorDiedError (as when Ray Data gives up on an actor whose node
    went away before it ever ran) after `after_rows` videos are written; returns the videos each pass was given."""
    import ray

    from vad.scoring import job

    real, calls = job.build_dataset, []

    class CutShort:
        def __init__(self, dataset):
            self.dataset = dataset

        def iter_rows(self):
            for i, row in enumerate(self.dataset.iter_rows()):
                if i == after_rows:
                    raise ray.exceptions.ActorDiedError()
                yield row

    def first_pass_dies(*args, **kwargs):
        calls.append(len(args[1]))
        dataset = real(*args, **kwargs)
        return CutShort(dataset) if len(calls) == 1 else dataset

    monkeypatch.setattr(job, "build_dataset", first_pass_dies)
    return calls


def test_killed_actors_and_a_pass_cut_short_lose_and_duplicate_nothing(ray_local, s3, long_archive, tmp_path, monkeypatch):
    """In one run: SIGKILL the scoring actor (Ray restarts it and retries its tasks) and the writer actor (the
    videos it held are left unwritten), both as the first results appear; then, 6 videos in, the pass ends with
    an ActorDiedError. The job goes on with a second pass over the videos not yet written, and only those."""
    calls = cut_short_once(monkeypatch, after_rows=6)
    cfg = job_config(s3, long_archive["uri"], long_archive["checkpoint"], tmp_path)
    cfg = cfg.model_copy(update={"mlflow": MlflowConfig(enabled=False)})
    killed: dict[str, list[int]] = {"ScoreClips": [], "WriteScores": []}

    def kill():
        for stage, pids in killed.items():
            for pid in actor_pids(stage):
                os.kill(pid, signal.SIGKILL)
                pids.append(pid)

    watcher = when_results_appear(tmp_path / "results" / "scores", kill)
    summary = run_scoring(cfg, run_date=DAY)
    watcher.join()
    assert all(killed.values()), f"an actor was not found to kill: {killed}"
    assert calls[:2] == [VIDEOS, VIDEOS - 6], calls  # the second pass took only what was missing
    assert len(summary.files) == VIDEOS and summary.errors == []
    assert_exactly_once(tmp_path / "results", long_archive["frames"])


@pytest.fixture
def two_node_cluster(ray_local):
    """A head (no CPUs for work) and two 2-CPU worker nodes on this machine; the shared local
    Ray is shut down meanwhile and started again afterwards."""
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()
    from vad.testing.s3server import free_port

    # The head's dashboard agent on a free port: another Ray on the host may hold the default (52365).
    head = {"num_cpus": 0, "include_dashboard": False, "dashboard_agent_listen_port": free_port()}
    cluster = Cluster(initialize_head=True, head_node_args=head)
    workers = [cluster.add_node(num_cpus=2) for _ in range(2)]
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        yield cluster, workers
    finally:
        ray.shutdown()
        cluster.shutdown()
        ray.init(address="local", **LOCAL_RAY)


def test_losing_a_node_mid_run_loses_and_duplicates_nothing(two_node_cluster, s3, long_archive, tmp_path):
    cluster, workers = two_node_cluster
    cfg = job_config(s3, long_archive["uri"], long_archive["checkpoint"], tmp_path)
    cfg = cfg.model_copy(update={"mlflow": MlflowConfig(enabled=False), "ray": RayConfig(address=cluster.address)})
    removed = []

    def lose_node():
        """Remove the worker node that hosts pipeline actors (the head has no CPUs for any)."""
        import ray

        busy = {
            actor["Address"]["NodeID"]
            for actor in ray._private.state.actors().values()
            if actor["State"] == "ALIVE" and "MapWorker" in actor["ActorClassName"]
        }
        victim = next((node for node in workers if node.node_id in busy), None)
        if victim is not None:
            cluster.remove_node(victim, allow_graceful=False)
            removed.append(victim)

    watcher = when_results_appear(tmp_path / "results" / "scores", lose_node)
    summary = run_scoring(cfg, run_date=DAY)
    watcher.join()
    assert removed, "no worker node hosted a pipeline actor when results appeared"
    assert len(summary.files) == VIDEOS and summary.errors == []
    assert_exactly_once(tmp_path / "results", long_archive["frames"])
