"""A night's results, read with SQL: the summary, every camera's scores in time order, the top events
(with their peak clip's masks and objects, and the latest operator answer), and the errors.

One model per camera: one run's rows when a run is asked for; else the rows of the model asked for (a
fleet's by its name without the `.<camera>`), or by default of the model that scored the camera last, so
a page never mixes two models' scales on one timeline. Where that model scored a clip more than once (a
re-run), its latest row counts; an event counts when its peak clip's row does."""

from __future__ import annotations

from dataclasses import dataclass, field

from vad.config import StorageConfig

# Rows of the night (and run, and model) asked for; parameters: `_selected(...)`.
_SELECTED = """
    SELECT * FROM scores WHERE (? IS NULL OR date = ?::DATE) AND (? IS NULL OR run_id = ?)
        AND (? IS NULL OR model_name = ? OR model_name = ? || '.' || camera)
"""
# The night's scores: per camera, one model's (the one asked for, or the one that scored it last), one row per clip.
_NIGHT = f"""
WITH selected AS ({_SELECTED}), camera_model AS (
    SELECT camera, arg_max(model_name, scored_at) AS model_name FROM selected GROUP BY camera
), night AS (
    SELECT s.* FROM selected s JOIN camera_model c ON c.camera = s.camera AND c.model_name = s.model_name
    QUALIFY row_number() OVER (PARTITION BY s.clip_id ORDER BY s.scored_at DESC) = 1
)
"""


def _selected(date: str | None, run_id: str | None, model: str | None) -> list:
    return [date, date, run_id, run_id, model, model, model]


@dataclass
class Night:
    results_uri: str
    date: str | None  # None: the results hold no scores at all
    run_id: str | None
    run_ids: list[str] = field(default_factory=list)  # the runs whose rows the night holds
    totals: dict = field(default_factory=dict)  # videos, clips, flagged, errors
    cameras: list[dict] = field(default_factory=list)  # per camera: videos, clips, flagged, errors, max_score
    timelines: dict[str, list[dict]] = field(default_factory=dict)  # camera -> clips in (video, time) order
    top: list[dict] = field(default_factory=list)  # events, highest peak first, with the peak clip's masks and objects, and answers
    errors: list[dict] = field(default_factory=list)


def _rows(con, sql: str, params: list) -> list[dict]:
    cursor = con.execute(sql, params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def read_night(results_uri: str, storage: StorageConfig | None = None, *, date: str | None = None, run_id: str | None = None,
               model: str | None = None, top_k: int = 12) -> Night:
    """The night of `date` (default: the latest date with scores, of `run_id` and `model` if given); `model`: a
    registered model name, a fleet's without the `.<camera>` (default: per camera, the model that scored it last)."""
    from vad.results.sql import with_readable_files

    def work(con) -> Night:
        night_date = date
        if night_date is None:
            found = con.execute(f"SELECT max(date)::VARCHAR FROM ({_SELECTED})", _selected(None, run_id, model)).fetchone()
            night_date = found[0] if found else None
        if night_date is None:
            return Night(results_uri, None, run_id)
        params = _selected(night_date, run_id, model)
        cameras, errors = _cameras(con, params, run_id)
        timelines: dict[str, list[dict]] = {}
        for row in _rows(con, _NIGHT + """
                SELECT camera, video_uri, clip_id, start_time_s, end_time_s, score, threshold, is_anomaly
                FROM night ORDER BY camera, video_uri, start_time_s""", params):
            timelines.setdefault(row.pop("camera"), []).append(row)
        top = _top_events(con, params, top_k)
        run_ids = [r["run_id"] for r in _rows(con, _NIGHT + "SELECT DISTINCT run_id FROM night ORDER BY run_id", params)]
        totals = {
            "videos": sum(c["videos"] for c in cameras), "clips": sum(c["clips"] for c in cameras),
            "flagged": sum(c["flagged"] or 0 for c in cameras), "events": sum(c["events"] for c in cameras), "errors": len(errors),
            "cameras": len(cameras),
        }
        return Night(results_uri, night_date, run_id, run_ids, totals, cameras, timelines, top, errors)

    return with_readable_files(results_uri, storage, work)


def _cameras(con, params: list, run_id: str | None) -> tuple[list[dict], list[dict]]:
    """The night's cameras (videos, clips, flagged, events per camera-hour, errors) and its errors."""
    cameras = _rows(con, _NIGHT + """, per_video AS (
                SELECT camera, video_uri, max(end_time_s) - min(start_time_s) AS seconds FROM night GROUP BY camera, video_uri),
            night_events AS (SELECT e.camera FROM events e JOIN night n ON n.clip_id = e.peak_clip_id AND n.run_id = e.run_id)
            SELECT camera, any_value(model_name) AS model_name, count(DISTINCT video_uri) AS videos, count(*) AS clips, sum(is_anomaly::INT) AS flagged,
                   max(score) AS max_score, min(threshold) AS threshold,
                   (SELECT sum(seconds) FROM per_video p WHERE p.camera = night.camera) / 3600.0 AS hours,
                   (SELECT count(*) FROM night_events x WHERE x.camera = night.camera) AS events
            FROM night GROUP BY camera ORDER BY camera""", params)
    for cam in cameras:
        cam["events_per_hour"] = cam["events"] / cam["hours"] if cam["hours"] else None
    # errors are kept under the run's date, scores under the videos': the night's errors are its runs'
    errors = _rows(con, _NIGHT + """
        SELECT uri, stage, error_class, message, permanent FROM errors
        WHERE run_id = ? OR run_id IN (SELECT DISTINCT run_id FROM night) ORDER BY uri""", [*params, run_id])
    for cam in cameras:
        cam["errors"] = sum(f"/{cam['camera']}/" in err["uri"] for err in errors)
    return cameras, errors


def _top_events(con, params: list, top_k: int) -> list[dict]:
    """The night's `top_k` events, highest peak first, with their answers, heat maps and objects."""
    top = _rows(con, _NIGHT + """, answers AS (
            SELECT event_id, answer, operator, note FROM feedback
            QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY answered_at DESC) = 1)
        SELECT e.event_id, e.camera, e.video_uri, e.start_frame, e.end_frame, e.start_time_s, e.end_time_s, e.clips,
               e.peak_score, e.peak_score AS score, e.peak_clip_id, e.peak_clip_id AS clip_id, e.peak_frame, e.threshold,
               e.reason, e.model_name, e.model_version, e.run_id, n.model_fallback, n.start_frame AS peak_start,
               n.frame_step, a.answer, a.operator AS answered_by, a.note AS answer_note,
               m.heatmap_png, m.heatmap_scale, m.mask_png
        FROM events e JOIN night n ON n.clip_id = e.peak_clip_id AND n.run_id = e.run_id
        LEFT JOIN masks m ON m.clip_id = e.peak_clip_id AND m.run_id = e.run_id
        LEFT JOIN answers a ON a.event_id = e.event_id
        ORDER BY e.peak_score DESC, e.event_id LIMIT ?""", [*params, top_k])
    _attach_objects(con, top)
    return top


def _attach_objects(con, top: list[dict], limit: int = 8) -> None:
    """Each top event's `objects` (those of its peak clip, `clip_id`): its objects of the same run above the camera's normal (score >= 1,
    the calibrated 99.9th percentile), the worst one always, at most `limit`, worst first."""
    if not top:
        return
    rows = _rows(con, """
        SELECT clip_id, run_id, frame, x0, y0, x1, y1, frame_height, frame_width, label, score, attribute
        FROM objects WHERE list_contains(?, clip_id) ORDER BY clip_id, score DESC""", [[c["clip_id"] for c in top]])
    by_clip: dict[tuple, list[dict]] = {}
    for row in rows:
        by_clip.setdefault((row.pop("clip_id"), row.pop("run_id")), []).append(row)
    for clip in top:
        found = by_clip.get((clip["clip_id"], clip["run_id"]), [])
        clip["objects"] = [o for i, o in enumerate(found) if i == 0 or o["score"] >= 1.0][:limit]
