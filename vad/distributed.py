"""Training through Ray Train: the same job on a laptop and on a GPU cluster.

The driver lists the normal footage and builds Ray Datasets with the scoring pipeline's decode stage
(held-out videos for validation); a TorchTrainer runs `train_loop` on `distributed.num_workers`
workers (DDP through `prepare_model`, bf16 autocast on GPU). Rank 0 writes a checkpoint every
`distributed.checkpoint_every` epochs and logs metrics to MLflow. A run that fails is restarted from
its last checkpoint (`max_failures`); a run that was stopped resumes when started again with the same
`run_name` and storage. The driver then sets the threshold from validation scores and writes a vad
checkpoint.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vad.config import TrainJobConfig
from vad.storage import read_bytes, write_bytes

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"


@dataclass
class DistributedResult:
    """What a Ray Train run produced (the model holds the final weights, on CPU)."""

    model: object
    history: list[dict] = field(default_factory=list)
    val_scores: np.ndarray | None = None
    threshold: float = float("nan")
    train_clips: int = 0
    val_clips: int = 0
    seconds: float = 0.0
    run_path: str = ""


def split_videos(videos: list, val_fraction: float) -> tuple[list, list]:
    """(training, validation) videos: every k-th video (k = 1 / val_fraction) is held out, so no clip
    of a validation video is ever trained on. With fewer than 2 videos there is no validation set."""
    if val_fraction <= 0 or len(videos) < 2:
        return list(videos), []
    every = max(2, int(round(1 / val_fraction)))
    val = [v for i, v in enumerate(videos) if i % every == every - 1] or [videos[-1]]
    return [v for v in videos if v not in val], val


def clips_dataset(videos: list, cfg: TrainJobConfig):
    """A Ray Dataset with one `frames` row per clip, decoded by the scoring pipeline's stage."""
    import ray

    from vad.stages import decode_tasks, decode_videos

    # Ordered blocks make the clip order, and so a seeded run and its resumption, reproducible.
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    tasks = decode_tasks([v.to_row() for v in videos], cfg.decode)
    ds = ray.data.from_items(tasks, override_num_blocks=max(1, min(len(tasks), 1000)))
    ds = ds.map_batches(decode_videos, batch_size=1, fn_kwargs={"decode": cfg.decode, "storage": cfg.storage}, num_cpus=cfg.decode.num_cpus)
    return ds.select_columns(["frames"])


class TrainingLoss(torch.nn.Module):
    """A scorer whose forward is its training loss, so that DDP all-reduces its gradients."""

    def __init__(self, scorer):
        super().__init__()
        self.scorer = scorer

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.scorer.training_loss(clips)


def _all_workers_sum(total: float, count: int) -> tuple[float, int]:
    """(sum, count) over all workers, or the local pair outside a process group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        pair = torch.tensor([total, float(count)], dtype=torch.float64)
        dist.all_reduce(pair)
        return float(pair[0]), int(pair[1])
    return total, count


def _mean(pair: tuple[float, int]) -> float:
    return pair[0] / pair[1] if pair[1] else float("nan")


def _restore(model: torch.nn.Module, optimiser, device=None) -> tuple[int, list[dict]]:
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


def _report(metrics: dict, history: list[dict], model: torch.nn.Module, optimiser, *, rank: int, save: bool) -> None:
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


def train_loop(config: dict) -> None:
    """Runs on every Ray Train worker."""
    import ray.train as train
    from ray.train.torch import get_device, prepare_model

    from vad.config import TrainLoopConfig, TrainModelConfig
    from vad.scorers import build_scorer

    model_cfg, loop = TrainModelConfig(**config["model"]), TrainLoopConfig(**config["train"])
    torch.manual_seed(loop.seed)
    device = get_device()
    scorer = build_scorer(model_cfg.name, **config["hparams"])
    loss_model = prepare_model(TrainingLoss(scorer))
    optimiser = torch.optim.Adam(scorer.parameters(), lr=loop.lr, weight_decay=loop.weight_decay)
    start, history = _restore(scorer, optimiser, device)
    rank = train.get_context().get_world_rank()
    tracker = _Tracker(config.get("mlflow")) if rank == 0 else None
    amp = device.type == "cuda"
    train_shard = train.get_dataset_shard("train")
    val_shard = train.get_dataset_shard("val") if config["has_val"] else None
    for epoch in range(start, loop.epochs):
        scorer.train()
        total, count = 0.0, 0
        batches = train_shard.iter_torch_batches(
            batch_size=loop.batch_size, local_shuffle_buffer_size=loop.shuffle_buffer_clips, local_shuffle_seed=loop.seed + epoch
        )
        for batch in batches:
            clips = batch["frames"].to(device).float().div_(255.0)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                loss = loss_model(clips)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total, count = total + float(loss.detach()) * len(clips), count + len(clips)
        scorer.eval()
        val_total, val_count = 0.0, 0
        if val_shard is not None:
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                for batch in val_shard.iter_torch_batches(batch_size=loop.batch_size):
                    clips = batch["frames"].to(device).float().div_(255.0)
                    val_total += float(scorer.training_loss(clips)) * len(clips)
                    val_count += len(clips)
        trained = _all_workers_sum(total, count)
        metrics = {
            "epoch": epoch, "train/loss": _mean(trained), "train/clips": trained[1],
            "val/loss": _mean(_all_workers_sum(val_total, val_count)),
        }
        history.append(metrics)
        if tracker is not None:
            tracker.log(metrics, epoch)
        save = (epoch + 1) % config["checkpoint_every"] == 0 or epoch == loop.epochs - 1
        _report(metrics, history, scorer, optimiser, rank=rank, save=save)
        _maybe_fail(config.get("fail_once_after_epoch"), epoch)


def _maybe_fail(spec: dict | None, epoch: int) -> None:
    """Fault injection for the resume tests: raise once after a given epoch (a marker file remembers)."""
    if not spec or epoch != spec["epoch"]:
        return
    marker = Path(spec["marker"])
    if not marker.exists():
        marker.write_text("failed once")
        raise RuntimeError(f"injected failure after epoch {epoch}")


class _Tracker:
    """MLflow logging from rank 0 into the driver's run (by id, so no active-run state is needed)."""

    def __init__(self, spec: dict | None):
        self.client = None
        if spec:
            from mlflow.tracking import MlflowClient

            self.client, self.run_id = MlflowClient(spec["tracking_uri"]), spec["run_id"]

    def log(self, metrics: dict, step: int) -> None:
        if self.client is None:
            return
        import math

        for key, value in metrics.items():
            if key != "epoch" and not math.isnan(value):
                self.client.log_metric(self.run_id, key, float(value), step=step)


def ensure_ray(cfg: TrainJobConfig) -> None:
    import ray

    if ray.is_initialized():
        return
    kwargs: dict = {}  # with the dashboard: Ray Train's controller is watched through the state API
    if cfg.distributed.ray_address:
        kwargs["address"] = cfg.distributed.ray_address
    elif cfg.distributed.num_cpus:
        kwargs["num_cpus"] = cfg.distributed.num_cpus
    ray.init(**kwargs)


FINISHED_MARKER = "vad-finished.json"


def run_name(cfg: TrainJobConfig) -> str:
    """Ray Train's run name: `cfg.run_name`, or a fresh timestamped one (so that only a run named
    again on purpose resumes)."""
    import datetime as dt

    return cfg.run_name or f"train-{cfg.model.name}-{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}"


def _storage_path(cfg: TrainJobConfig) -> str:
    return cfg.distributed.storage_path or str(Path(cfg.work_dir).expanduser().resolve() / "ray-train")


def _already_finished(marker_uri: str, cfg: TrainJobConfig) -> bool:
    try:
        read_bytes(marker_uri, cfg.storage)
    except FileNotFoundError:
        return False
    return True


def train_distributed(
    cfg: TrainJobConfig, videos: list, hparams: dict, mlflow_spec: dict | None = None, fail_once_after_epoch: dict | None = None
) -> DistributedResult:
    """Train `cfg.model` with Ray Train on the clips of `videos`; returns the final model and threshold."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from vad.scorers import build_scorer
    from vad.training import score_clips

    ensure_ray(cfg)
    dist = cfg.distributed
    storage, name = _storage_path(cfg), run_name(cfg)
    marker = f"{storage.rstrip('/')}/{name}/{FINISHED_MARKER}"
    if _already_finished(marker, cfg):  # before any decoding
        raise ValueError(
            f"training run {name!r} under {storage} has already finished; give a new run_name "
            "(re-using a name resumes an unfinished run)"
        )
    train_videos, val_videos = split_videos(videos, cfg.train.val_fraction)
    datasets = {"train": clips_dataset(train_videos, cfg)}
    if cfg.train.max_clips:
        datasets["train"] = datasets["train"].limit(cfg.train.max_clips)
    if val_videos:
        datasets["val"] = clips_dataset(val_videos, cfg).materialize()
    resources = {"CPU": dist.cpus_per_worker, **({"GPU": dist.gpus_per_worker} if dist.use_gpu else {})}
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={
            "model": cfg.model.model_dump(),
            "train": cfg.train.model_dump(),
            "hparams": hparams,
            "checkpoint_every": dist.checkpoint_every,
            "has_val": bool(val_videos),
            "mlflow": mlflow_spec,
            "fail_once_after_epoch": fail_once_after_epoch,
        },
        scaling_config=ray.train.ScalingConfig(num_workers=dist.num_workers, use_gpu=dist.use_gpu, resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=dist.keep_checkpoints),
            failure_config=ray.train.FailureConfig(max_failures=dist.max_failures),
        ),
        datasets=datasets,
    )
    started = time.perf_counter()
    result = trainer.fit()
    seconds = time.perf_counter() - started
    write_bytes(marker, b'{"finished": true}', cfg.storage)
    model = build_scorer(cfg.model.name, **hparams)
    with result.checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    model.eval()
    history = list(state["history"])  # every epoch, across restarts and resumptions
    # The threshold is a quantile of held-out normal clips' scores (training clips when there are none).
    reference = datasets["val"] if val_videos else datasets["train"].limit(512)
    clips = np.concatenate([b["frames"] for b in reference.iter_batches(batch_size=256, batch_format="numpy")])
    scores = score_clips(model, clips)
    if hasattr(model, "calibrate"):  # scorers with pixel masks calibrate them on the same clips
        model.calibrate(torch.from_numpy(clips[:64]).float().div_(255.0))
    return DistributedResult(
        model=model, history=history, val_scores=scores, threshold=float(np.quantile(scores, cfg.train.threshold_quantile)),
        train_clips=int(history[-1]["train/clips"]) if history else 0, val_clips=len(clips) if val_videos else 0,
        seconds=seconds, run_path=result.path,
    )


def mil_train_loop(config: dict) -> None:
    """Ray Train worker loop of the MIL head: each step ranks a batch of (anomalous, normal) bag pairs."""
    import ray
    import ray.train as train
    from ray.train.torch import prepare_model

    from vad.scorers.mil.loss import mil_ranking_loss
    from vad.scorers.mil.model import MILHead

    anomalous, normal = (torch.from_numpy(np.asarray(ray.get(ref))).float() for ref in config["bags"])
    rank = train.get_context().get_world_rank()
    torch.manual_seed(config["seed"])  # the same initial head on every rank
    head = MILHead(feature_dim=anomalous.shape[-1], dropout=config["dropout"])
    model = prepare_model(head)
    optimiser = torch.optim.Adagrad(head.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
    start, history = _restore(head, optimiser)
    pairs = config["batch_pairs"]
    for epoch in range(start, config["epochs"]):
        rng = np.random.default_rng([config["seed"], rank, epoch])  # each rank draws its own pairs
        head.train()
        losses = []
        for _ in range(config["steps_per_epoch"]):
            ia, inn = rng.integers(0, len(anomalous), pairs), rng.integers(0, len(normal), pairs)
            loss = mil_ranking_loss(model(anomalous[ia]), model(normal[inn]))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
        metrics = {"epoch": epoch, "train/loss": _mean(_all_workers_sum(float(np.sum(losses)), len(losses)))}
        history.append(metrics)
        _report(metrics, history, head, optimiser, rank=rank, save=True)


def train_mil_distributed(
    anomalous: np.ndarray, normal: np.ndarray, *, name: str, storage_path: str, num_workers: int = 2,
    cpus_per_worker: float = 1.0, use_gpu: bool = False, epochs: int = 20, steps_per_epoch: int = 25,
    batch_pairs: int = 30, lr: float = 1e-3, weight_decay: float = 1e-3, dropout: float = 0.6, seed: int = 0,
    max_failures: int = 2,
):
    """The MIL head (Sultani et al.) trained with Ray Train on bags (n, 32, d); returns (head, history).

    Same loss and Adagrad as `vad.scorers.mil.train_mil`; every rank draws its own bag pairs, DDP
    averages their gradients, so N workers see N x `batch_pairs` pairs per step."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from vad.scorers.mil.model import MILHead

    if not ray.is_initialized():
        ray.init()
    trainer = TorchTrainer(
        mil_train_loop,
        train_loop_config={
            "bags": [ray.put(np.ascontiguousarray(anomalous, dtype=np.float32)), ray.put(np.ascontiguousarray(normal, dtype=np.float32))],
            "epochs": epochs, "steps_per_epoch": steps_per_epoch, "batch_pairs": batch_pairs, "lr": lr,
            "weight_decay": weight_decay, "dropout": dropout, "seed": seed,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=num_workers, use_gpu=use_gpu, resources_per_worker={"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})}
        ),
        run_config=ray.train.RunConfig(
            name=name, storage_path=storage_path, checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
        ),
    )
    result = trainer.fit()
    with result.checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)
    head = MILHead(feature_dim=anomalous.shape[-1], dropout=dropout)
    head.load_state_dict(state["model"])
    return head.eval(), list(state["history"])


def clip_features_by_video(cfg: TrainJobConfig, videos: list) -> dict[str, np.ndarray]:
    """Backbone features (n_clips, d) of every video, in clip order, extracted by Ray Data with
    the scoring pipeline's decode stage and the `ExtractFeatures` actor."""
    import ray

    from vad.stages import DecodeAndExtractFeatures, ExtractFeatures, decode_tasks, map_decoded_clips

    extractor = cfg.model.hparams.get("extractor", "i3d")
    tasks = decode_tasks([v.to_row() for v in videos], cfg.decode)
    ds = ray.data.from_items(tasks, override_num_blocks=max(1, min(len(tasks), 1000)))
    ds = map_decoded_clips(
        ds, model_stage=ExtractFeatures, fused_stage=DecodeAndExtractFeatures,
        constructor_kwargs={"extractor": extractor, "weights": cfg.model.backbone_weights, "storage": cfg.storage, "device": cfg.train.device},
        decode=cfg.decode, storage=cfg.storage, batch_size=cfg.train.batch_size, concurrency=cfg.distributed.num_workers,
        num_cpus=cfg.distributed.cpus_per_worker, num_gpus=cfg.distributed.gpus_per_worker if cfg.distributed.use_gpu else 0,
    )
    per_video: dict[str, dict[int, np.ndarray]] = {}
    for batch in ds.select_columns(["video_uri", "clip_index", "features"]).iter_batches(batch_size=256, batch_format="numpy"):
        for uri, index, feature in zip(batch["video_uri"], batch["clip_index"], batch["features"]):
            per_video.setdefault(str(uri), {})[int(index)] = feature
    return {uri: np.stack([clips[k] for k in sorted(clips)]) for uri, clips in per_video.items()}


@dataclass
class MILResult:
    model: torch.nn.Module  # MILScorer: backbone + head
    history: list[dict]
    threshold: float
    val_metrics: dict[str, float]
    bags: dict[str, int]  # counts: train/val x anomalous/normal
    clips: int
    seconds: float
    run_path: str


def train_mil_job(cfg: TrainJobConfig, videos: list) -> MILResult:
    """`vad train` for the MIL ranker: weak labels from `train.anomalous_regex`, 32-segment bags
    of backbone features, the head trained with Ray Train, validated on held-out videos of both
    classes (`val/loss`: ranking loss over all their pairs; `val/auc`: video-level AUC of the
    max segment score), threshold = a quantile of held-out normal clips' scores."""
    import io
    import re

    from sklearn.metrics import roc_auc_score

    from vad.extractors import build_extractor
    from vad.scorers.mil.loss import mil_ranking_loss
    from vad.scorers.mil.model import MILScorer, segment_features

    if not cfg.train.anomalous_regex:
        raise ValueError("mil learns from weakly labelled videos: set train.anomalous_regex (keys of anomalous videos)")
    marked = re.compile(cfg.train.anomalous_regex)
    anomalous = [v for v in videos if marked.search(v.key)]
    normal = [v for v in videos if not marked.search(v.key)]
    if not anomalous or not normal:
        raise ValueError(f"mil needs anomalous and normal videos; train.anomalous_regex marks {len(anomalous)} of {len(videos)}")
    ensure_ray(cfg)
    storage, name = _storage_path(cfg), run_name(cfg)
    marker = f"{storage.rstrip('/')}/{name}/{FINISHED_MARKER}"
    if _already_finished(marker, cfg):
        raise ValueError(f"training run {name!r} under {storage} has already finished; give a new run_name")
    features = clip_features_by_video(cfg, videos)
    train_a, val_a = split_videos(anomalous, cfg.train.val_fraction) if cfg.train.val_fraction and len(anomalous) > 1 else (anomalous, [])
    train_n, val_n = split_videos(normal, cfg.train.val_fraction) if cfg.train.val_fraction and len(normal) > 1 else (normal, [])

    def bags(group: list) -> np.ndarray:
        return np.stack([segment_features(features[v.uri]) for v in group if v.uri in features])

    started = time.perf_counter()
    dist = cfg.distributed
    head, history = train_mil_distributed(
        bags(train_a), bags(train_n), name=name, storage_path=storage, num_workers=dist.num_workers,
        cpus_per_worker=dist.cpus_per_worker, use_gpu=dist.use_gpu, epochs=cfg.train.epochs,
        steps_per_epoch=cfg.train.steps_per_epoch, batch_pairs=cfg.train.batch_size, lr=cfg.train.lr,
        weight_decay=cfg.train.weight_decay, dropout=cfg.model.hparams.get("dropout", 0.6), seed=cfg.train.seed,
        max_failures=dist.max_failures,
    )
    seconds = time.perf_counter() - started
    write_bytes(marker, b'{"finished": true}', cfg.storage)
    val_metrics: dict[str, float] = {}
    with torch.inference_mode():
        if val_a and val_n:
            scores_a, scores_n = head(torch.from_numpy(bags(val_a))), head(torch.from_numpy(bags(val_n)))
            ia, inn = np.meshgrid(np.arange(len(scores_a)), np.arange(len(scores_n)), indexing="ij")
            val_metrics["val/loss"] = float(mil_ranking_loss(scores_a[ia.ravel()], scores_n[inn.ravel()]))
            top = torch.cat([scores_a.max(dim=1).values, scores_n.max(dim=1).values]).numpy()
            val_metrics["val/auc"] = float(roc_auc_score([1] * len(scores_a) + [0] * len(scores_n), top))
        reference = np.concatenate([features[v.uri] for v in (val_n or train_n) if v.uri in features])
        clip_scores = head(torch.nn.functional.normalize(torch.from_numpy(reference).float(), dim=1)).numpy()
    extractor = cfg.model.hparams.get("extractor", "i3d")
    state = None
    if cfg.model.backbone_weights:
        state = torch.load(io.BytesIO(read_bytes(cfg.model.backbone_weights, cfg.storage)), weights_only=True)
    model = MILScorer.from_parts(extractor, build_extractor(extractor, state_dict=state), head)
    return MILResult(
        model=model, history=history, threshold=float(np.quantile(clip_scores, cfg.train.threshold_quantile)),
        val_metrics=val_metrics, seconds=seconds, clips=sum(len(f) for f in features.values()), run_path=f"{storage.rstrip('/')}/{name}",
        bags={"train_anomalous": len(train_a), "train_normal": len(train_n), "val_anomalous": len(val_a), "val_normal": len(val_n)},
    )
