"""The Arrow schemas of every table vad writes. Bump the version on any change."""

from __future__ import annotations

import hashlib

import pyarrow as pa

SCORES_SCHEMA_VERSION = 2  # 2: runs gained errors/up_to_date/failure_rate; errors and manifest tables

# Partition keys live in the hive path (date=YYYY-MM-DD/camera=ID/), not inside the files.
PARTITION_SCHEMA = pa.schema([("date", pa.date32()), ("camera", pa.string())])

SCORES_SCHEMA = pa.schema(
    [
        ("schema_version", pa.int16()),
        ("run_id", pa.string()),
        ("clip_id", pa.string()),
        ("video_uri", pa.string()),
        ("clip_index", pa.int32()),
        ("start_frame", pa.int64()),
        ("end_frame", pa.int64()),  # inclusive
        ("frame_step", pa.int16()),
        ("start_time_s", pa.float64()),
        ("end_time_s", pa.float64()),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("score", pa.float32()),
        ("threshold", pa.float32()),
        ("is_anomaly", pa.bool_()),
        ("frame_scores", pa.list_(pa.field("element", pa.float32()))),  # Parquet's list item name
        ("scored_at", pa.timestamp("us", tz="UTC")),
    ],
    metadata={"vad.table": "scores", "vad.schema_version": str(SCORES_SCHEMA_VERSION)},
)

MASKS_SCHEMA = pa.schema(
    [
        ("schema_version", pa.int16()),
        ("run_id", pa.string()),
        ("clip_id", pa.string()),  # joins scores.clip_id
        ("video_uri", pa.string()),
        ("clip_index", pa.int32()),
        ("start_frame", pa.int64()),
        ("frame_step", pa.int16()),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("mask_png", pa.list_(pa.field("element", pa.binary()))),  # one 1-bit PNG per frame of the clip
        ("anomalous_pixels", pa.list_(pa.field("element", pa.int32()))),
    ],
    metadata={"vad.table": "masks", "vad.schema_version": str(SCORES_SCHEMA_VERSION)},
)

RUNS_SCHEMA = pa.schema(
    [
        ("schema_version", pa.int16()),
        ("run_id", pa.string()),
        ("run_date", pa.date32()),
        ("started_at", pa.timestamp("us", tz="UTC")),
        ("finished_at", pa.timestamp("us", tz="UTC")),
        ("source_uri", pa.string()),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("videos", pa.int64()),
        ("rejected", pa.int64()),
        ("up_to_date", pa.int64()),  # skipped: already scored by this model, object unchanged
        ("errors", pa.int64()),
        ("failure_rate", pa.float64()),
        ("clips", pa.int64()),
        ("anomalous_clips", pa.int64()),
        ("wall_s", pa.float64()),
        ("clips_per_s", pa.float64()),
    ],
    metadata={"vad.table": "runs", "vad.schema_version": str(SCORES_SCHEMA_VERSION)},
)


# One row per object the job could not score: listing, reading, decoding, scoring or writing.
ERRORS_SCHEMA = pa.schema(
    [
        ("schema_version", pa.int16()),
        ("run_id", pa.string()),
        ("uri", pa.string()),
        ("stage", pa.string()),  # list | read | open | decode | score | write | incomplete
        ("error_class", pa.string()),
        ("message", pa.string()),
        ("permanent", pa.bool_()),  # the object itself is bad: not retried until it changes
        ("size", pa.int64()),
        ("recorded_at", pa.timestamp("us", tz="UTC")),
    ],
    metadata={"vad.table": "errors", "vad.schema_version": str(SCORES_SCHEMA_VERSION)},
)

# What was scored (or found permanently bad) by which model: the job skips objects listed here
# whose size and mtime have not changed.
MANIFEST_SCHEMA = pa.schema(
    [
        ("schema_version", pa.int16()),
        ("run_id", pa.string()),
        ("uri", pa.string()),
        ("size", pa.int64()),
        ("mtime", pa.float64()),  # seconds since epoch (S3 LastModified), newest frame for folders
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("decode", pa.string()),  # decode signature, see `decode_signature`
        ("status", pa.string()),  # scored | failed
        ("clips", pa.int64()),
        ("scores_path", pa.string()),
        ("recorded_at", pa.timestamp("us", tz="UTC")),
    ],
    metadata={"vad.table": "manifest", "vad.schema_version": str(SCORES_SCHEMA_VERSION)},
)


def clip_id(video_uri: str, clip_index: int, clip_len: int, stride: int, frame_step: int) -> str:
    """Stable id of a clip: the same video cut the same way gives the same ids on every run."""
    digest = hashlib.sha1(f"{video_uri}|{clip_len}|{stride}|{frame_step}".encode()).hexdigest()[:16]
    return f"{digest}-{clip_index:06d}"


def decode_signature(clip_len: int, stride: int, frame_step: int, resize, grayscale: bool, backend: str = "decord") -> str:
    """How a video was cut into clips; part of a result's identity beside the model. Decoders
    differ in the last bit of a pixel, so a backend other than the default is part of it too.
    `signature_of(decode)` takes a `DecodeConfig`."""
    size = "x".join(map(str, resize)) if resize else "native"
    signature = f"len{clip_len}-stride{stride}-step{frame_step}-{size}-{'gray' if grayscale else 'rgb'}"
    return signature if backend == "decord" else f"{signature}-{backend}"


def signature_of(decode) -> str:
    """`decode_signature` of a `vad.config.DecodeConfig`."""
    return decode_signature(decode.clip_len, decode.stride, decode.frame_step, decode.resize, decode.grayscale, decode.backend)


def result_file_name(video_uri: str, model_name: str, model_version: str, decode: str) -> str:
    """The one file holding a video's results for a model and decode: a re-run overwrites it,
    so a clip can never appear twice, and a changed video replaces its old rows."""
    digest = hashlib.sha1(f"{video_uri}|{model_name}|{model_version}|{decode}".encode()).hexdigest()[:24]
    return f"video-{digest}.parquet"
