"""`train.use_feedback`: the footage of events operators marked normal (`vad feedback ... --normal`) joins
its camera's normal training set, as spans of the scored videos (only the clips starting inside an event
are cut). An event's latest answer counts; events marked anomalous are never added."""

from __future__ import annotations

import logging

from vad.config import TrainJobConfig
from vad.io.sources import VideoRef

log = logging.getLogger(__name__)


def feedback_footage(cfg: TrainJobConfig) -> list[VideoRef]:
    """The spans of the events whose latest answer is `normal`, each with its camera, each `feedback_repeat(cfg)` times
    (empty without use_feedback)."""
    from vad.results.feedback import latest_answers

    if not cfg.train.use_feedback:
        return []
    answers = [a for a in latest_answers(cfg.train.feedback_results, cfg.storage).values() if a["answer"] == "normal"]
    spans, missing = [], []
    videos: dict[str, VideoRef | None] = {}
    for answer in sorted(answers, key=lambda a: (a["camera"], a["video_uri"], a["start_frame"])):
        uri = answer["video_uri"]
        if uri not in videos:
            videos[uri] = _video(uri, answer["camera"], cfg)
        video = videos[uri]
        if video is None:
            missing.append(uri)
            continue
        spans.append(VideoRef(video.uri, video.key, video.kind, video.size, video.mtime, answer["camera"], video.date, video.frames,
                              int(answer["start_frame"]), int(answer["end_frame"])))
    if missing:
        log.warning("%d events marked normal are of videos no longer readable, left out: %s", len(missing), ", ".join(sorted(set(missing))[:5]))
    log.info("feedback: %d events marked normal (of %d cameras) join the normal training footage, %d times each", len(spans),
             len({s.camera for s in spans}), feedback_repeat(cfg))
    return [span for span in spans for _ in range(feedback_repeat(cfg))]


FITTED_REPEAT, TRAINED_REPEAT = 16, 4


def feedback_repeat(cfg: TrainJobConfig) -> int:
    """`train.feedback_repeat`, or by how the model learns: a fitted scorer's density needs more weight on a few dismissed
    objects than a trained scorer's epochs do on a few clips."""
    from vad.models.registry import LearningType
    from vad.models.scorers import scorer_meta

    if cfg.train.feedback_repeat is not None:
        return cfg.train.feedback_repeat
    return FITTED_REPEAT if scorer_meta(cfg.model.name).learning_type is LearningType.FITTED else TRAINED_REPEAT


def _video(uri: str, camera: str, cfg: TrainJobConfig) -> VideoRef | None:
    """The video (object or frame folder) at `uri`, or None when it cannot be found."""
    import pyarrow.fs as pafs

    from vad.config import SourceConfig
    from vad.io.sources import list_videos
    from vad.io.storage import filesystem, parse_uri

    location = parse_uri(uri)
    info = filesystem(location, cfg.storage).get_file_info(location.path)
    if info.type == pafs.FileType.File:
        return VideoRef(uri, uri.rsplit("/", 1)[-1], "video", int(info.size), float(info.mtime.timestamp()), camera, "1970-01-01")
    if info.type == pafs.FileType.Directory:  # a frame folder: listed from its parent, as a source would
        parent = uri.rstrip("/").rsplit("/", 1)[0]
        videos, _ = list_videos(SourceConfig(uri=parent), cfg.storage)
        return next((v for v in videos if v.uri.rstrip("/") == uri.rstrip("/")), None)
    return None
