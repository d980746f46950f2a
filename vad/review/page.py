"""The report page: one self-contained HTML file (styles inline, pictures as data: URIs), readable
offline and attachable anywhere, made from the template `templates/page.html` (Jinja2, autoescaped:
whatever comes from the data is escaped). Timelines are matplotlib PNGs, previews the animated WebPs
`previews` cut, one card per event."""

from __future__ import annotations

import base64
import io
from functools import lru_cache

from vad.review.night import Night


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def timeline_png(camera: str, rows: list[dict], top_ids: dict[str, int]) -> bytes:
    """The camera's clip scores over its night's footage (videos end to end, boundaries dotted), the
    threshold, flagged clips shaded, the report's top events numbered at their peak clips."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 2.6), dpi=90)
    offset, last_video, xs, scores, thresholds = 0.0, None, [], [], []
    for row in rows:
        if row["video_uri"] != last_video:
            if last_video is not None:
                offset = xs[-1] + 1.0
                ax.axvline(offset, color="#9aa5b1", linestyle=":", linewidth=1)
            last_video, start = row["video_uri"], offset
        x = start + (row["start_time_s"] or 0.0)
        xs.append(x)
        scores.append(row["score"])
        thresholds.append(row["threshold"])
        if row["is_anomaly"]:
            ax.axvspan(x, start + (row["end_time_s"] or row["start_time_s"] or 0.0), color="#ef9a9a", alpha=0.5, linewidth=0)
        if row["clip_id"] in top_ids:
            ax.annotate(f"#{top_ids[row['clip_id']]}", (x, row["score"]), textcoords="offset points", xytext=(0, 6), ha="center",
                        fontsize=8, color="#b71c1c")
    ax.plot(xs, scores, color="#1565c0", linewidth=1.2, label="clip score")
    ax.step(xs, thresholds, where="post", color="#c62828", linestyle="--", linewidth=1, label="threshold")
    ax.set_xlabel("seconds of footage (the night's videos end to end)")
    ax.set_ylabel("score")
    ax.set_title(camera, loc="left", fontsize=11)
    ax.legend(loc="upper right", fontsize=8, frameon=False)
    ax.margins(x=0.01)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def fmt(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


@lru_cache(maxsize=1)
def _template():
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(loader=PackageLoader("vad.review", "templates"), autoescape=select_autoescape(["html"]), undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    return env.get_template("page.html")


def render(night: Night, previews: dict[str, dict], *, title: str = "vad nightly review", generated_at: str = "") -> str:
    """The page of `night`; `previews` maps event_id -> {animation (WebP), strip (JPEG), error}."""
    top_ids = {event["peak_clip_id"]: rank for rank, event in enumerate(night.top, 1)}
    timelines = [(camera, data_uri(timeline_png(camera, rows, top_ids), "image/png")) for camera, rows in night.timelines.items()]
    cards = []
    for event in night.top:
        preview = previews.get(event["event_id"]) or {"error": "not cut"}
        ok = bool(preview.get("animation"))
        cards.append({"event": event, "animation": data_uri(preview["animation"], "image/webp") if ok else "",
                      "strip": data_uri(preview["strip"], "image/jpeg") if ok else "", "error": preview.get("error") or "not cut"})
    return _template().render(night=night, cards=cards, timelines=timelines, title=title, generated_at=generated_at, fmt=fmt)
