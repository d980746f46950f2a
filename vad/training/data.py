"""The footage a learner gets, one way for every kind of model: clips decoded by the scoring pipeline's decode
stage, as a Ray Dataset (`clips_dataset`, for `vad train` on the cluster) or as one array in this process
(`decode_clips`, for a fleet camera's task and the benchmarks), each clip with its video and times where
the held-out footage's false-alarm budget needs them (`vad.training.alerts.META`)."""

from __future__ import annotations

import numpy as np

from vad.config import TrainJobConfig
from vad.training.alerts import META


def clips_dataset(videos: list, cfg: TrainJobConfig, columns: tuple[str, ...] = ("frames",)):
    """A Ray Dataset with one row per clip (`columns`: its frames, and e.g. its video and times), decoded by
    the scoring pipeline's stage, its blocks in order (so a seeded run and its resumption see the same clips
    in the same order)."""
    from vad.scoring.decoding import decode_videos, task_dataset

    ds = task_dataset([v.to_row() for v in videos], cfg.decode)
    ds.context.execution_options.preserve_order = True  # this dataset's own context, not the process's
    ds = ds.map_batches(decode_videos, batch_size=1, fn_kwargs={"decode": cfg.decode, "storage": cfg.storage}, num_cpus=cfg.decode.num_cpus)
    return ds.select_columns(list(columns))


def gather(ds, batch_size: int = 256, with_meta: bool = False) -> tuple[np.ndarray, dict | None]:
    """A (small) clip dataset's frames as one array, and with `with_meta` its clips' videos and times."""
    batches = list(ds.iter_batches(batch_size=batch_size, batch_format="numpy"))
    frames = np.concatenate([b["frames"] for b in batches]) if batches else np.zeros((0,), np.uint8)
    meta = {k: np.concatenate([b[k] for b in batches]) for k in META} if with_meta and batches else None
    return frames, meta


def decode_clips(videos: list, cfg: TrainJobConfig, limit: int | None = None, meta: dict | None = None,
                 spans: dict | None = None) -> np.ndarray:
    """Every clip of `videos` as one uint8 array, decoded in this process (once; the epochs reuse it); with
    `meta` (a dict), each clip's video and times are added to it, column by column. Event spans (listed
    `feedback_repeat` times) are decoded once, into `spans` when the caller passes one to reuse."""
    from vad.video.clips import iter_clip_batches

    parts: list[np.ndarray] = []
    columns: dict[str, list] = {k: [] for k in META}
    spans = {} if spans is None else spans
    count = 0
    for video in videos:
        if video.first_frame is not None and video not in spans:
            spans[video] = list(iter_clip_batches(video, cfg.decode, cfg.storage))
        for batch in spans[video] if video.first_frame is not None else iter_clip_batches(video, cfg.decode, cfg.storage):
            parts.append(batch["frames"])
            for k in META:
                columns[k].append(batch[k])
            count += len(batch["frames"])
            if limit is not None and count >= limit:
                break
        if limit is not None and count >= limit:
            break
    if meta is not None:
        meta.update({k: np.concatenate(v)[:limit] if v else np.zeros(0) for k, v in columns.items()})
    if not parts:
        return np.zeros((0, cfg.decode.clip_len), dtype=np.uint8)
    return np.concatenate(parts)[:limit]
