"""The MIL ranker (Sultani et al. 2018) trained by `vad train`: weak video-level labels, 32-segment
bags of backbone features extracted by Ray Data, the head trained on Ray Train."""

from __future__ import annotations

import logging
import re
import time

import numpy as np
import torch

from vad.cluster import ensure_ray
from vad.config import TrainJobConfig
from vad.training import ray_train
from vad.training.result import Trained
from vad.training.step import mil_epoch

log = logging.getLogger(__name__)

WEAK_LABELS_NEEDED = "mil learns from weakly labelled videos: set train.anomalous_regex (keys of anomalous videos)"


def mil_train_loop(config: dict) -> None:
    """Ray Train worker loop of the weakly supervised learner: epochs of `mil_epoch` over the bags."""
    import ray
    import ray.train as train
    from ray.train.torch import prepare_model

    learner = config["learner"]  # the scorer's class: its head and ranking loss (`WeaklySupervisedScorer`)
    anomalous, normal = (torch.from_numpy(np.asarray(ray.get(ref))).float() for ref in config["bags"])
    rank = train.get_context().get_world_rank()
    torch.manual_seed(config["seed"])  # the same initial head on every rank
    head = learner.head_for(anomalous.shape[-1], dropout=config["dropout"])
    model = prepare_model(head)
    optimiser = torch.optim.Adagrad(head.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
    start, history = ray_train.restore(head, optimiser)
    for epoch in range(start, config["epochs"]):
        losses = mil_epoch(model, learner.ranking_loss, optimiser, anomalous, normal, steps=config["steps_per_epoch"],
                           pairs=config["batch_pairs"], seed=config["seed"], epoch=epoch, rank=rank)
        metrics = {"epoch": epoch, "train/loss": ray_train.mean(ray_train.all_workers_sum(float(np.sum(losses)), len(losses)))}
        history.append(metrics)
        ray_train.report(metrics, history, head, optimiser, rank=rank, save=True)
        ray_train.end_of_epoch(config["epoch_callbacks"], metrics)


def train_mil_distributed(
    anomalous: np.ndarray, normal: np.ndarray, *, learner=None, name: str, storage_path: str, num_workers: int = 2,
    cpus_per_worker: float = 1.0, use_gpu: bool = False, gpus_per_worker: float = 1.0, epochs: int = 20,
    steps_per_epoch: int = 25, batch_pairs: int = 30, lr: float = 1e-3, weight_decay: float = 1e-3, dropout: float = 0.6,
    seed: int = 0, max_failures: int = 2, keep_checkpoints: int = 2, epoch_callbacks: list = (),
):
    """The head of `learner` (a `WeaklySupervisedScorer` class; the MIL ranker's by default) trained with Ray
    Train on bags (n, 32, d); returns (head, history).

    The loop of `vad.training.local.train_mil` (`mil_epoch`); every rank draws its own bag pairs, DDP
    averages their gradients, so N workers see N x `batch_pairs` pairs per step. `epoch_callbacks` run
    on every worker after each epoch with its metrics (and feed the driver's epoch bar)."""
    import ray

    from vad.models.scorers.mil.model import MILScorer

    learner = learner or MILScorer
    ensure_ray(None)  # a private local Ray unless the caller connected to one
    loop_config = {
        "learner": learner,
        "bags": [ray.put(np.ascontiguousarray(anomalous, dtype=np.float32)), ray.put(np.ascontiguousarray(normal, dtype=np.float32))],
        "epochs": epochs, "steps_per_epoch": steps_per_epoch, "batch_pairs": batch_pairs, "lr": lr,
        "weight_decay": weight_decay, "dropout": dropout, "seed": seed, "epoch_callbacks": list(epoch_callbacks),
    }
    workers = ray_train.Workers(num_workers, use_gpu, cpus_per_worker, gpus_per_worker, keep_checkpoints, max_failures)
    state, _ = ray_train.fit(mil_train_loop, loop_config, ray_train.TrainRun(storage_path, name), workers)
    head = learner.head_for(anomalous.shape[-1], dropout=dropout)
    head.load_state_dict(state["model"])
    return head.eval(), list(state["history"])


def clip_features_by_video(cfg: TrainJobConfig, videos: list) -> dict[str, np.ndarray]:
    """Backbone features (n_clips, d) of every video, in clip order, extracted by Ray Data with
    the scoring pipeline's decode stage and the `ExtractFeatures` actor."""
    from vad.scoring.decoding import map_decoded_clips, task_dataset
    from vad.scoring.stages import DecodeAndExtractFeatures, ExtractFeatures

    extractor = cfg.model.hparams.get("extractor", "i3d")
    ds = map_decoded_clips(
        task_dataset([v.to_row() for v in videos], cfg.decode), model_stage=ExtractFeatures, fused_stage=DecodeAndExtractFeatures,
        constructor_kwargs={"extractor": extractor, "weights": cfg.model.backbone_weights, "storage": cfg.storage, "device": cfg.train.device},
        decode=cfg.decode, storage=cfg.storage, batch_size=cfg.train.batch_size, concurrency=cfg.distributed.num_workers,
        num_cpus=cfg.distributed.cpus_per_worker, num_gpus=cfg.distributed.gpus_per_worker if cfg.distributed.use_gpu else 0,
    )
    per_video: dict[str, dict[int, np.ndarray]] = {}
    for batch in ds.select_columns(["video_uri", "clip_index", "features"]).iter_batches(batch_size=256, batch_format="numpy"):
        for uri, index, feature in zip(batch["video_uri"], batch["clip_index"], batch["features"]):
            per_video.setdefault(str(uri), {})[int(index)] = feature
    return {uri: np.stack([clips[k] for k in sorted(clips)]) for uri, clips in per_video.items()}


def weak_labels(cfg: TrainJobConfig, videos: list) -> tuple[list, list]:
    """(anomalous, normal) videos by `train.anomalous_regex`; both must be there."""
    if not cfg.train.anomalous_regex:
        raise ValueError(WEAK_LABELS_NEEDED)
    marked = re.compile(cfg.train.anomalous_regex)
    anomalous = [v for v in videos if marked.search(v.key)]
    normal = [v for v in videos if not marked.search(v.key)]
    if not anomalous or not normal:
        raise ValueError(f"mil needs anomalous and normal videos; train.anomalous_regex marks {len(anomalous)} of {len(videos)}")
    return anomalous, normal


def train_mil_job(cfg: TrainJobConfig, videos: list, hparams: dict, *, epoch_callbacks: list = (), **_) -> Trained:
    """`vad train` for a weakly supervised scorer (the MIL ranker): weak labels from `train.anomalous_regex`,
    32-segment bags of backbone features, the head trained with Ray Train, validated on held-out videos of
    both classes (`val/loss`: ranking loss over all their pairs; `val/auc`: video-level AUC of the max
    segment score), threshold from held-out normal clips' scores (`settle`; every frame of a clip takes
    its score)."""
    from vad.models.scorers import build_scorer
    from vad.models.scorers.mil.model import segment_features
    from vad.training.alerts import settle
    from vad.training.split import split_videos, split_warning

    if cfg.alerts.max_false_per_hour is not None:
        log.warning("%s: alerts.max_false_per_hour is not supported (its held-out clips are bag features without times); "
                    "the threshold is train.threshold_quantile's", cfg.model.name)
    anomalous, normal = weak_labels(cfg, videos)
    scorer = build_scorer(cfg.model.name, **hparams)
    run = ray_train.claim_run(cfg)
    train_a, val_a = split_videos(anomalous, cfg.train.val_fraction)
    train_n, val_n = split_videos(normal, cfg.train.val_fraction)
    for what, train, val in (("anomalous videos", train_a, val_a), ("normal videos", train_n, val_n)):
        if warning := split_warning(what, train, val, cfg.train.val_fraction):
            log.warning(warning)
    features = clip_features_by_video(cfg, videos)

    def bags(group: list) -> np.ndarray:
        return np.stack([segment_features(features[v.uri]) for v in group if v.uri in features])

    started = time.perf_counter()
    dist = cfg.distributed
    head, history = train_mil_distributed(
        bags(train_a), bags(train_n), learner=type(scorer), name=run.name, storage_path=run.storage, num_workers=dist.num_workers,
        cpus_per_worker=dist.cpus_per_worker, use_gpu=dist.use_gpu, gpus_per_worker=dist.gpus_per_worker, epochs=cfg.train.epochs,
        steps_per_epoch=cfg.train.steps_per_epoch, batch_pairs=cfg.train.batch_size, lr=cfg.train.lr,
        weight_decay=cfg.train.weight_decay, dropout=cfg.model.hparams.get("dropout", 0.6), seed=cfg.train.seed,
        max_failures=dist.max_failures, keep_checkpoints=dist.keep_checkpoints, epoch_callbacks=epoch_callbacks,
    )
    seconds = time.perf_counter() - started
    ray_train.mark_finished(run, cfg)
    val_metrics = _validate(type(scorer), head, bags(val_a), bags(val_n)) if val_a and val_n else {}
    with torch.inference_mode():
        reference = np.concatenate([features[v.uri] for v in (val_n or train_n) if v.uri in features])
        clip_scores = head(torch.nn.functional.normalize(torch.from_numpy(reference).float(), dim=1)).numpy()
    settled = settle(clip_scores, clip_scores[:, None], quantile=cfg.train.threshold_quantile, held_out=bool(val_n), what=cfg.model.name)
    return Trained(
        scorer.with_head(head, _backbone_state(cfg)), settled.threshold, history, clip_scores, settled.calibration,
        train_clips=sum(len(f) for f in features.values()), val_clips=len(reference) if val_n else 0, seconds=seconds, run_path=run.path,
        val_metrics=val_metrics,
        figures={f"train/bags_{k}": v for k, v in
                 {"train_anomalous": len(train_a), "train_normal": len(train_n), "val_anomalous": len(val_a), "val_normal": len(val_n)}.items()},
    )


def _validate(learner, head, anomalous: np.ndarray, normal: np.ndarray) -> dict[str, float]:
    """Held-out bags of both classes: the ranking loss over all their pairs, and the video-level AUC of the max segment score."""
    from sklearn.metrics import roc_auc_score

    with torch.inference_mode():
        scores_a, scores_n = head(torch.from_numpy(anomalous)), head(torch.from_numpy(normal))
        ia, inn = np.meshgrid(np.arange(len(scores_a)), np.arange(len(scores_n)), indexing="ij")
        loss = float(learner.ranking_loss(scores_a[ia.ravel()], scores_n[inn.ravel()]))
        top = torch.cat([scores_a.max(dim=1).values, scores_n.max(dim=1).values]).numpy()
    return {"val/loss": loss, "val/auc": float(roc_auc_score([1] * len(scores_a) + [0] * len(scores_n), top))}


def _backbone_state(cfg: TrainJobConfig) -> dict | None:
    """The backbone weights the features were extracted with (`model.backbone_weights`; None: random init)."""
    import io

    from vad.io.storage import read_bytes

    if not cfg.model.backbone_weights:
        return None
    return torch.load(io.BytesIO(read_bytes(cfg.model.backbone_weights, cfg.storage)), weights_only=True)
