"""What every `vad train` loop shares on Ray Train: the run's name and storage, the finished marker,
the checkpoint restore/report pair, cross-worker sums, and the TorchTrainer itself.

A run that fails is restarted from its last checkpoint (`distributed.max_failures`); a run that was
stopped resumes when started again with the same `run_name` and storage; a finished run is refused.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from vad.config import DistributedConfig, TrainJobConfig
from vad.io.storage import read_bytes, write_bytes

STATE_FILE = "state.pt"
FINISHED_MARKER = "vad-finished.json"


@dataclass(frozen=True)
class TrainRun:
    """Where a Ray Train run keeps its state: `storage`/`name`, finished once `marker` exists."""

    storage: str
    name: str

    @property
    def path(self) -> str:
        return f"{self.storage.rstrip('/')}/{self.name}"

    @property
    def marker(self) -> str:
        return f"{self.path}/{FINISHED_MARKER}"


def run_name(cfg: TrainJobConfig) -> str:
    """Ray Train's run name: `cfg.run_name`, or a fresh timestamped one (so that only a run named
    again on purpose resumes)."""
    return cfg.run_name or f"train-{cfg.model.name}-{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}"


def claim_run(cfg: TrainJobConfig) -> TrainRun:
    """The run `cfg` names; refused (before any decoding) when it has already finished."""
    run = TrainRun(cfg.distributed.storage_path or str(Path(cfg.work_dir).expanduser().resolve() / "ray-train"), run_name(cfg))
    try:
        read_bytes(run.marker, cfg.storage)
    except FileNotFoundError:
        return run
    raise ValueError(
        f"training run {run.name!r} under {run.storage} has already finished; give a new run_name "
        "(re-using a name resumes an unfinished run)"
    )


def mark_finished(run: TrainRun, cfg: TrainJobConfig) -> None:
    write_bytes(run.marker, b'{"finished": true}', cfg.storage)


def all_workers_sum(total: float, count: int) -> tuple[float, int]:
    """(sum, count) over all workers, or the local pair outside a process group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        pair = torch.tensor([total, float(count)], dtype=torch.float64)
        dist.all_reduce(pair)
        return float(pair[0]), int(pair[1])
    return total, count


def mean(pair: tuple[float, int]) -> float:
    return pair[0] / pair[1] if pair[1] else float("nan")


def restore(model: torch.nn.Module, optimiser, device=None) -> tuple[int, list[dict]]:
    """Load the run's latest checkpoint, if any, into model and optimiser; (first epoch to run, history)."""
    import ray.train as train

    checkpoint = train.get_checkpoint()
    if checkpoint is None:
        return 0, []
    with checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / STATE_FILE, map_location=device, weights_only=True)
    model.load_state_dict(state["model"])
    optimiser.load_state_dict(state["optimiser"])
    return int(state["epoch"]) + 1, list(state["history"])


def report(metrics: dict, history: list[dict], model: torch.nn.Module, optimiser, *, rank: int, save: bool) -> None:
    """Report an epoch's metrics; with `save`, rank 0 attaches a checkpoint (weights, optimiser, history)."""
    import ray.train as train

    if not save:
        train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as folder:
        saved = None
        if rank == 0:
            state = {"model": model.state_dict(), "optimiser": optimiser.state_dict(), "epoch": metrics["epoch"], "history": history}
            torch.save(state, Path(folder) / STATE_FILE)
            saved = train.Checkpoint.from_directory(folder)
        train.report(metrics, checkpoint=saved)


def end_of_epoch(callbacks: list[Callable[[dict], None]], metrics: dict) -> None:
    """Run the job's epoch callbacks (`run_training(..., epoch_callbacks=...)`) on a worker."""
    for callback in callbacks:
        callback(metrics)


@dataclass(frozen=True)
class Workers:
    """The Ray Train worker group: its size and resources, checkpoints kept, restarts allowed."""

    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0
    keep_checkpoints: int = 2
    max_failures: int = 2

    @classmethod
    def from_config(cls, dist: DistributedConfig) -> "Workers":
        return cls(dist.num_workers, dist.use_gpu, dist.cpus_per_worker, dist.gpus_per_worker, dist.keep_checkpoints, dist.max_failures)


def fit(loop: Callable[[dict], None], loop_config: dict, run: TrainRun, workers: Workers, *, datasets: dict | None = None,
        dataset_config=None) -> tuple[dict, str]:
    """Run `loop` on the worker group; returns (the last checkpoint's state, the Ray Train run path)."""
    import functools

    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from vad.training.progress import EpochBoard, fit_showing_epochs, report_epoch

    board = None
    if "epoch_callbacks" in loop_config:  # the loop reports its epochs: show them
        board = ray.remote(num_cpus=0)(EpochBoard).remote()
        loop_config = {**loop_config, "epoch_callbacks": [*loop_config["epoch_callbacks"], functools.partial(report_epoch, board)]}
    resources = {"CPU": workers.cpus_per_worker, **({"GPU": workers.gpus_per_worker} if workers.use_gpu else {})}
    trainer = TorchTrainer(
        loop,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(num_workers=workers.num_workers, use_gpu=workers.use_gpu, resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=run.name,
            storage_path=run.storage,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=workers.keep_checkpoints),
            failure_config=ray.train.FailureConfig(max_failures=workers.max_failures),
        ),
        datasets=datasets,
        **({"dataset_config": dataset_config} if dataset_config is not None else {}),
    )
    epochs = loop_config["train"]["epochs"] if "train" in loop_config else loop_config["epochs"]
    result = fit_showing_epochs(trainer, board, int(epochs)) if board is not None else trainer.fit()
    with result.checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)
    return state, result.path
