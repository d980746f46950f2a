"""The gradient learner on the cluster (`LearningType.TRAINED`: autoencoders, predictors): trained on normal footage with Ray Train.

The driver lists the normal footage and builds Ray Datasets with the scoring pipeline's decode stage
(held-out videos for validation); a TorchTrainer runs `train_loop` on `distributed.num_workers`
workers (DDP through `prepare_model`, bf16 autocast on GPU). Rank 0 writes a checkpoint every
`distributed.checkpoint_every` epochs and logs metrics to MLflow. The driver then sets the threshold
from validation scores.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import torch

from vad.config import TrainJobConfig
from vad.models.inputs import unit_clips
from vad.training import ray_train
from vad.training.result import Trained
from vad.training.step import train_step

log = logging.getLogger(__name__)


def _ordered_ingest():
    """Ray Train's ingest options with the blocks kept in order (see `clips_dataset`)."""
    import ray.train

    options = ray.train.DataConfig.default_ingest_options()
    options.preserve_order = True
    return ray.train.DataConfig(execution_options=options)


class TrainingLoss(torch.nn.Module):
    """A scorer whose forward is its training loss, so that DDP all-reduces its gradients."""

    def __init__(self, scorer):
        super().__init__()
        self.scorer = scorer

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.scorer.training_loss(clips)


def train_loop(config: dict) -> None:
    """Runs on every Ray Train worker."""
    import ray.train as train
    from ray.train.torch import get_device, prepare_model

    from vad.config import TrainLoopConfig, TrainModelConfig
    from vad.models.scorers import build_scorer
    from vad.tracking.runs import EpochLogger

    model_cfg, loop = TrainModelConfig(**config["model"]), TrainLoopConfig(**config["train"])
    torch.manual_seed(loop.seed)
    device = get_device()
    scorer = build_scorer(model_cfg.name, **config["hparams"])
    loss_model = prepare_model(TrainingLoss(scorer))
    optimiser = torch.optim.Adam(scorer.parameters(), lr=loop.lr, weight_decay=loop.weight_decay)
    start, history = ray_train.restore(scorer, optimiser, device)
    rank = train.get_context().get_world_rank()
    logger = EpochLogger.from_spec(config["mlflow"] if rank == 0 else None)
    bf16 = device.type == "cuda"
    train_shard = train.get_dataset_shard("train")
    val_shard = train.get_dataset_shard("val") if config["has_val"] else None
    for epoch in range(start, loop.epochs):
        scorer.train()
        total, count = 0.0, 0
        batches = train_shard.iter_torch_batches(
            batch_size=loop.batch_size, local_shuffle_buffer_size=loop.shuffle_buffer_clips, local_shuffle_seed=loop.seed + epoch
        )
        for batch in batches:
            clips = unit_clips(batch["frames"], device)
            total, count = total + train_step(loss_model, optimiser, clips, bf16=bf16) * len(clips), count + len(clips)
        scorer.eval()
        val_total, val_count = 0.0, 0
        if val_shard is not None:
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
                for batch in val_shard.iter_torch_batches(batch_size=loop.batch_size):
                    clips = unit_clips(batch["frames"], device)
                    val_total += float(scorer.training_loss(clips)) * len(clips)
                    val_count += len(clips)
        trained = ray_train.all_workers_sum(total, count)
        metrics = {
            "epoch": epoch, "train/loss": ray_train.mean(trained), "train/clips": trained[1],
            "val/loss": ray_train.mean(ray_train.all_workers_sum(val_total, val_count)),
        }
        history.append(metrics)
        logger.log(metrics, epoch)
        save = (epoch + 1) % config["checkpoint_every"] == 0 or epoch == loop.epochs - 1
        ray_train.report(metrics, history, scorer, optimiser, rank=rank, save=save)
        ray_train.end_of_epoch(config["epoch_callbacks"], metrics)


def train_distributed(
    cfg: TrainJobConfig, train_videos: list, val_videos: list, hparams: dict, *, mlflow_spec: dict | None = None,
    epoch_callbacks: list[Callable[[dict], None]] = (),
) -> Trained:
    """Train `cfg.model` with Ray Train on the clips of `train_videos`, validate on `val_videos`
    (`vad.training.split.split_videos`); returns the final model and threshold.

    `epoch_callbacks` run on every worker after each epoch's report, with its metrics."""
    from vad.models.scorers import build_scorer
    from vad.training.alerts import META, settle
    from vad.training.data import clips_dataset, gather
    from vad.training.local import score_clips_and_frames

    run = ray_train.claim_run(cfg)
    train = clips_dataset(train_videos, cfg)
    if cfg.train.max_clips:
        train = train.limit(cfg.train.max_clips)
    # Decoded once, before the first epoch: the epochs read the stored blocks instead of decoding again.
    # They live in Ray's object store, which spills what does not fit in memory to local disk.
    datasets = {"train": train.materialize()}
    log.info("decoded the training clips once: %.0f MB held by Ray's object store", datasets["train"].size_bytes() / 2**20)
    held_out = None
    if val_videos:  # with each clip's video and times (the budget threshold counts events); the workers get the frames
        held_out = clips_dataset(val_videos, cfg, ("frames", *META)).materialize()
        datasets["val"] = held_out.select_columns(["frames"])
    loop_config = {
        "model": cfg.model.model_dump(), "train": cfg.train.model_dump(), "hparams": hparams,
        "checkpoint_every": cfg.distributed.checkpoint_every, "has_val": bool(val_videos), "mlflow": mlflow_spec,
        "epoch_callbacks": list(epoch_callbacks),
    }
    started = time.perf_counter()
    state, path = ray_train.fit(
        train_loop, loop_config, run, ray_train.Workers.from_config(cfg.distributed), datasets=datasets, dataset_config=_ordered_ingest()
    )
    seconds = time.perf_counter() - started
    ray_train.mark_finished(run, cfg)
    model = build_scorer(cfg.model.name, **hparams)
    model.load_state_dict(state["model"])
    model.eval()
    history = list(state["history"])  # every epoch, across restarts and resumptions
    # The threshold comes from held-out normal clips' scores (training clips when there are none).
    clips, meta = gather(held_out if held_out is not None else datasets["train"].limit(512), with_meta=held_out is not None)
    scores, frame_scores = score_clips_and_frames(model, clips)
    settled = settle(scores, frame_scores, quantile=cfg.train.threshold_quantile, alerts=cfg.alerts, meta=meta, held_out=bool(val_videos),
                     what=cfg.model.name)
    model.calibrate(unit_clips(clips[:64]))  # what the model sets from the same clips besides its threshold (pixel masks)
    return Trained(
        model, settled.threshold, history, scores, settled.calibration, settled.budget,
        train_clips=int(history[-1]["train/clips"]) if history else 0, val_clips=len(clips) if val_videos else 0,
        seconds=seconds, run_path=path,
    )
