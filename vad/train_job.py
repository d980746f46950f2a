"""`vad train`: train a scorer on normal footage and write a checkpoint."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from vad.checkpoint import decode_record, save_checkpoint
from vad.config import TrainJobConfig
from vad.scorers import build_scorer
from vad.stages import pick_device
from vad.tracking import mlflow_run
from vad.training import FitResult, fit, load_clips

log = logging.getLogger(__name__)


@dataclass
class TrainSummary:
    checkpoint: str
    clips: int
    result: FitResult
    mlflow_run_id: str | None = None


def run_training(cfg: TrainJobConfig) -> TrainSummary:
    clips = load_clips(cfg.source, cfg.decode, cfg.storage, cfg.train.key_regex, cfg.train.max_clips)
    hparams = {"clip_len": cfg.decode.clip_len, **cfg.model.hparams}
    model = build_scorer(cfg.model.name, **hparams)
    log.info("training %s on %d clips of shape %s", cfg.model.name, len(clips), clips.shape[1:])
    with mlflow_run(cfg.mlflow, cfg.work_dir, cfg.run_name or f"train-{cfg.model.name}", {"vad.job": "train"}) as mlflow:
        if mlflow is not None:
            mlflow.log_params(
                {
                    "model.name": cfg.model.name,
                    **{f"model.{k}": v for k, v in hparams.items()},
                    **{f"train.{k}": v for k, v in cfg.train.model_dump().items()},
                    **{f"decode.{k}": v for k, v in decode_record(cfg.decode).items()},
                    "source.uri": cfg.source.uri,
                    "clips": len(clips),
                }
            )

        def on_epoch(row: dict) -> None:
            if mlflow is not None:
                mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])

        t = cfg.train
        result = fit(
            model,
            clips,
            epochs=t.epochs,
            batch_size=t.batch_size,
            lr=t.lr,
            weight_decay=t.weight_decay,
            val_fraction=t.val_fraction,
            threshold_quantile=t.threshold_quantile,
            seed=t.seed,
            device=pick_device(t.device),
            on_epoch=on_epoch,
        )
        model.cpu()
        metrics = {"train/loss": result.history[-1]["train/loss"], "train/seconds": result.seconds}
        save_checkpoint(
            cfg.output.checkpoint,
            model,
            version=cfg.output.version,
            threshold=result.threshold,
            decode=decode_record(cfg.decode),
            metrics=metrics,
            storage=cfg.storage,
        )
        run_id = None
        if mlflow is not None:
            mlflow.log_metrics({"train/threshold": result.threshold, "train/seconds": result.seconds})
            mlflow.set_tag("vad.checkpoint", cfg.output.checkpoint)
            run_id = mlflow.active_run().info.run_id
    return TrainSummary(cfg.output.checkpoint, len(clips), result, run_id)
