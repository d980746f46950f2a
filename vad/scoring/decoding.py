"""Videos into clip batches on Ray Data, and the composition of decoding with a model stage.

`task_dataset` starts every pipeline that decodes (scoring, training, feature extraction) with decode task
rows; `decode_videos` turns them into clip batches; `map_decoded_clips` runs them through a model stage
(`vad.scoring.stages`) and sets the resources: separate decode tasks and GPU actors where the cluster has
GPUs, one actor that decodes its own rows where it has none.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from vad.config import DecodeConfig, StorageConfig
from vad.io.sources import VideoRef
from vad.video.clips import iter_clip_batches, split_parts


def decode_tasks(listing: list[dict], decode: DecodeConfig) -> list[dict]:
    """Listing rows -> decode task rows: a long video becomes several (`part`, `parts`) rows."""
    tasks = []
    for row in listing:
        parts = split_parts(VideoRef.from_row(row), decode)
        tasks += [{**row, "part": part, "parts": parts} for part in range(parts)]
    return tasks


def task_dataset(listing: list[dict], decode: DecodeConfig):
    """The start of every Ray Data pipeline that decodes videos (scoring, training, feature extraction): a
    dataset of decode task rows (`decode_tasks`), in up to 1,000 blocks so the decode spreads across the cluster."""
    import ray

    tasks = decode_tasks(listing, decode)
    return ray.data.from_items(tasks, override_num_blocks=max(1, min(len(tasks), 1000)))


def decode_videos(
    batch: dict[str, np.ndarray], *, decode: DecodeConfig, storage: StorageConfig | None, errors=None
) -> Iterator[dict[str, np.ndarray]]:
    """Decode task rows in, clip batches out, one video (or share of one) at a time (a generator,
    so memory stays bounded).

    With an `errors` log (a `vad.results.ledger.ErrorLog` actor), a video that fails is reported there
    and the task goes on with the next one; clips it already yielded are dropped by the writer,
    which only writes complete videos. Without one, the failure is raised."""
    from vad.results.ledger import error_row, report_errors
    from vad.video.readers import BadVideo

    columns = list(batch)
    for i in range(len(batch["uri"])):
        row = {name: batch[name][i] for name in columns}
        video = VideoRef.from_row(row)
        model_index = row.get("model_index")
        try:
            for clips in iter_clip_batches(video, decode, storage, int(row.get("part", 0)), int(row.get("parts", 1))):
                if model_index is not None:  # the route of the video's camera (`vad.scoring.routing`)
                    clips["model_index"] = np.full(len(clips["clip_index"]), int(model_index), dtype=np.int32)
                yield clips
        except Exception as exc:
            if errors is None:
                raise
            if isinstance(exc, BadVideo):
                failure = error_row(video.uri, exc.stage, exc, permanent=True, size=video.size)
            else:  # I/O (after the store's retries) or anything unforeseen: tried again next run
                failure = error_row(video.uri, "read" if isinstance(exc, OSError) else "decode", exc, size=video.size)
            report_errors(errors, [failure])


def decode_in_batches(
    batch: dict[str, np.ndarray], batch_size: int, *, decode: DecodeConfig, storage: StorageConfig | None, errors=None
) -> Iterator[dict[str, np.ndarray]]:
    """`decode_videos` regrouped into batches of about `batch_size` clips (the last may be smaller)."""
    pending: list[dict[str, np.ndarray]] = []
    pending_clips = 0
    for clips in decode_videos(batch, decode=decode, storage=storage, errors=errors):
        pending.append(clips)
        pending_clips += len(clips["clip_index"])
        if pending_clips >= batch_size:
            yield concatenate_batches(pending)
            pending, pending_clips = [], 0
    if pending:
        yield concatenate_batches(pending)


def map_decoded_clips(
    ds, *, model_stage: type, fused_stage: type, constructor_kwargs: dict, decode: DecodeConfig,
    storage: StorageConfig | None, batch_size: int, concurrency: int, num_cpus: float, num_gpus: float,
    errors=None,
):
    """`ds` (decode task rows, `decode_tasks`) decoded and run through a model actor stage.

    With GPUs: decode tasks on the CPUs (`decode.num_cpus` each), then `model_stage` actors on the
    GPUs with batches of `batch_size` clips from many videos. Without: `fused_stage` (the model stage
    that decodes its own rows) takes one task row per call, one call in flight per actor, so a
    ready actor cannot hoard the rows the others wait for (see `DecodeAndScoreClips`)."""
    import ray

    if num_gpus > 0:
        ds = ds.map_batches(
            decode_videos, batch_size=1, fn_kwargs={"decode": decode, "storage": storage, "errors": errors}, num_cpus=decode.num_cpus
        )
        return ds.map_batches(
            model_stage,
            fn_constructor_kwargs=constructor_kwargs,
            batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(size=concurrency),
            num_cpus=num_cpus,
            num_gpus=num_gpus,
        )
    return ds.map_batches(
        fused_stage,
        fn_constructor_kwargs={**constructor_kwargs, "decode": decode, "storage": storage, "batch_size": batch_size},
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=concurrency, max_tasks_in_flight_per_actor=1),
        num_cpus=num_cpus,
    )


def concatenate_batches(batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    batches = [b for b in batches if len(b["video_uri"])] or batches[:1]  # a route whose model failed leaves an empty part
    if len(batches) == 1:
        return batches[0]
    return {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}
