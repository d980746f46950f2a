"""Operators' answers about events (`vad feedback`): the `feedback` table beside the results.

Each answer is its own small file named by (event, operator, answer), written atomically: the same answer
twice is one row (the file is rewritten), two people answering at once write two files and nothing is lost,
and an event's latest answer counts. An answer names an event of the results, raised by the model version
that last scored its video; anything else is refused with one line and nothing written."""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import re

import pyarrow as pa

from vad.config import StorageConfig
from vad.io.storage import filesystem, parse_uri, write_parquet_atomic
from vad.results.schema import FEEDBACK_SCHEMA, SCORES_SCHEMA_VERSION

ANSWERS = ("normal", "anomaly")
EVENT_ID = re.compile(r"e[0-9a-f]{15}")  # `vad.results.events.event_id`


class FeedbackError(ValueError):
    """An answer that cannot be recorded (unknown event, an event of an older model version, a bad answer)."""


def operator_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in this environment (a container without /etc/passwd entry)
        return "unknown"


def record_feedback(results_uri: str, event_id: str, answer: str, *, operator: str | None = None, note: str | None = None,
                    storage: StorageConfig | None = None) -> dict:
    """Record `answer` (normal | anomaly) about event `event_id` of the results at `results_uri`; returns the row."""
    from vad.results.sql import run_query

    if answer not in ANSWERS:
        raise FeedbackError(f"answer {answer!r}: one of {', '.join(ANSWERS)}")
    if not EVENT_ID.fullmatch(event_id):
        raise FeedbackError(f"{event_id!r} is not an event id (e and 15 hex digits, the events table's event_id)")
    columns, rows = run_query(results_uri, f"""
        SELECT e.event_id, e.video_uri, e.camera, e.model_name, e.model_version, e.start_frame, e.end_frame, e.start_time_s,
               e.end_time_s,
               (SELECT s.model_version FROM scores s WHERE s.video_uri = e.video_uri AND s.model_name = e.model_name
                ORDER BY s.scored_at DESC LIMIT 1) AS latest_version
        FROM events e WHERE e.event_id = '{event_id}'""", storage)
    if not rows:
        raise FeedbackError(f"no event {event_id} under {results_uri} (vad query \"SELECT event_id, camera, video_uri FROM events\")")
    event = dict(zip(columns, rows[0]))
    if event["latest_version"] not in (None, event["model_version"]):
        raise FeedbackError(
            f"event {event_id} was raised by {event['model_name']} version {event['model_version']}, but its video was since scored "
            f"by version {event['latest_version']}: answer that version's event of the same footage"
        )
    row = {
        "schema_version": SCORES_SCHEMA_VERSION, "run_id": None, "event_id": event_id, "answer": answer,
        "operator": operator or operator_name(), "note": note, "answered_at": dt.datetime.now(dt.timezone.utc),
        **{k: event[k] for k in ("video_uri", "camera", "model_name", "model_version", "start_frame", "end_frame", "start_time_s", "end_time_s")},
    }
    name = hashlib.sha1(f"{event_id}|{row['operator']}|{answer}".encode()).hexdigest()[:24]
    root = parse_uri(results_uri).join("feedback")
    write_parquet_atomic(filesystem(root, storage), root.join(f"feedback-{name}.parquet").path, pa.Table.from_pylist([row], schema=FEEDBACK_SCHEMA))
    return row


def latest_answers(results_uri: str, storage: StorageConfig | None = None) -> dict[str, dict]:
    """event_id -> its latest answer's row."""
    from vad.results.sql import run_query

    columns, rows = run_query(results_uri, """
        SELECT * FROM feedback QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY answered_at DESC) = 1""", storage)
    return {row[columns.index("event_id")]: dict(zip(columns, row)) for row in rows}
