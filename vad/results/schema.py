"""The Arrow schemas of every table vad writes. Bump the version on any change."""

from __future__ import annotations

import hashlib

import pyarrow as pa

# 2: runs gained errors/up_to_date/failure_rate; errors and manifest tables. 3: runs.skipped, masks.heatmap_png and
# heatmap_scale. 4: scores.model_fallback; model_name/model_version name the registered model when scored from the registry.
# 5: scores.reason; the objects table. 6: the events and feedback tables; runs.events
SCORES_SCHEMA_VERSION = 6

# Partition keys live in the hive path (date=YYYY-MM-DD/camera=ID/), not inside the files.
PARTITION_SCHEMA = pa.schema([("date", pa.date32()), ("camera", pa.string())])

# Types the tables share. Columns are grouped one line per meaning.
_I16, _I32, _I64, _F32, _F64, _STR, _BOOL = pa.int16(), pa.int32(), pa.int64(), pa.float32(), pa.float64(), pa.string(), pa.bool_()
_UTC = pa.timestamp("us", tz="UTC")
_HEAD = [("schema_version", _I16), ("run_id", _STR)]  # every table starts with these


def _table(name: str, columns: list[tuple[str, pa.DataType]]) -> pa.Schema:
    return pa.schema(_HEAD + columns, metadata={"vad.table": name, "vad.schema_version": str(SCORES_SCHEMA_VERSION)})


def _list_of(item: pa.DataType) -> pa.DataType:
    return pa.list_(pa.field("element", item))  # Parquet's list item name


SCORES_SCHEMA = _table("scores", [
    ("clip_id", _STR), ("video_uri", _STR), ("clip_index", _I32),
    ("start_frame", _I64), ("end_frame", _I64), ("frame_step", _I16),  # end_frame is inclusive
    ("start_time_s", _F64), ("end_time_s", _F64),
    # the model that scored the clip: the registered model and version (models:/ uris), else the checkpoint's
    # scorer and version; model_fallback: a fleet's fallback model, the camera having none of its own
    ("model_name", _STR), ("model_version", _STR), ("model_fallback", _BOOL),
    ("score", _F32), ("threshold", _F32), ("is_anomaly", _BOOL), ("frame_scores", _list_of(_F32)),
    ("reason", _STR),  # why, in words, from scorers that explain (objects: the worst object and attribute); else null
    ("scored_at", _UTC),
])

MASKS_SCHEMA = _table("masks", [
    ("clip_id", _STR), ("video_uri", _STR), ("clip_index", _I32),  # clip_id joins scores.clip_id
    ("start_frame", _I64), ("frame_step", _I16), ("height", _I32), ("width", _I32),
    ("mask_png", _list_of(pa.binary())),  # one 1-bit PNG per frame of the clip
    ("anomalous_pixels", _list_of(_I32)),
    # per frame: the pixel scores the mask thresholds, an 8-bit PNG (longer side <= 64) and its scale
    ("heatmap_png", _list_of(pa.binary())), ("heatmap_scale", _list_of(_F32)),
])

# The highest-scoring objects of each clip (scorers that find objects), at most `report_objects` per clip.
OBJECTS_SCHEMA = _table("objects", [
    ("clip_id", _STR), ("video_uri", _STR), ("clip_index", _I32),  # clip_id joins scores.clip_id
    ("frame", _I64),  # the video frame the object was seen in (0-based, as scores.start_frame)
    ("x0", _F32), ("y0", _F32), ("x1", _F32), ("y1", _F32),  # its box in pixels of the decoded frame
    ("frame_height", _I32), ("frame_width", _I32),  # ... of this size
    ("label", _STR), ("label_score", _F32), ("source", _STR),  # COCO class and the detector's score; source detector | motion
    ("speed", _F32), ("relative_speed", _F32), ("box_height", _F32),  # px per decoded frame; box heights per frame; px
    # each attribute's calibrated score (1 = the camera's normal 99.9th percentile), their sum, and the leading attribute
    ("velocity_score", _F32), ("geometry_score", _F32), ("appearance_score", _F32), ("score", _F32), ("attribute", _STR),
    ("model_name", _STR), ("model_version", _STR),
])

# A video's flagged clips of one model merged into events (gaps of at most alerts.merge_gap_s): what a person reviews.
EVENTS_SCHEMA = _table("events", [
    ("event_id", _STR),  # stable: the same video, model and first clip give the same id on every run
    ("video_uri", _STR), ("model_name", _STR), ("model_version", _STR),
    ("start_frame", _I64), ("end_frame", _I64), ("start_time_s", _F64), ("end_time_s", _F64),  # end_frame inclusive
    ("clips", _I32),  # flagged clips merged into it
    ("peak_score", _F32), ("peak_clip_id", _STR), ("peak_frame", _I64),  # the highest-scoring clip (joins scores.clip_id) and frame
    ("threshold", _F32), ("reason", _STR),  # the peak clip's threshold and reason (scorers that explain)
    ("scored_at", _UTC),
])

# An operator's answer about an event: one file per (event, operator, answer), so the same answer twice is one row
# and two people answering at once lose nothing; an event's latest answer counts.
FEEDBACK_SCHEMA = _table("feedback", [
    ("event_id", _STR), ("answer", _STR),  # normal | anomaly
    ("operator", _STR), ("note", _STR), ("answered_at", _UTC),
    # the event as it was answered: enough to find its footage without the events table
    ("video_uri", _STR), ("camera", _STR), ("model_name", _STR), ("model_version", _STR),
    ("start_frame", _I64), ("end_frame", _I64), ("start_time_s", _F64), ("end_time_s", _F64),
])

RUNS_SCHEMA = _table("runs", [
    ("run_date", pa.date32()), ("started_at", _UTC), ("finished_at", _UTC),
    ("source_uri", _STR), ("model_name", _STR), ("model_version", _STR),
    # up_to_date: skipped, already scored by this model and the object unchanged
    # rejected: video objects that cannot be taken (errors); skipped: objects that are not video
    ("videos", _I64), ("rejected", _I64), ("skipped", _I64), ("up_to_date", _I64), ("errors", _I64), ("failure_rate", _F64),
    ("clips", _I64), ("anomalous_clips", _I64), ("events", _I64), ("wall_s", _F64), ("clips_per_s", _F64),
])

# One row per object the job could not score: listing, reading, decoding, scoring or writing.
ERRORS_SCHEMA = _table("errors", [
    ("uri", _STR),
    ("stage", _STR),  # list | model | read | open | decode | score | write | incomplete
    ("error_class", _STR), ("message", _STR),
    ("permanent", _BOOL),  # the object itself is bad: not retried until it changes
    ("size", _I64), ("recorded_at", _UTC),
])

# What was scored (or found permanently bad) by which model: the job skips objects listed here
# whose size and mtime have not changed.
MANIFEST_SCHEMA = _table("manifest", [
    ("uri", _STR), ("size", _I64),
    ("mtime", _F64),  # seconds since epoch (S3 LastModified), newest frame for folders
    ("model_name", _STR), ("model_version", _STR),
    ("decode", _STR),  # decode signature, see `decode_signature`
    ("status", _STR),  # scored | failed
    ("clips", _I64), ("scores_path", _STR), ("recorded_at", _UTC),
])


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
