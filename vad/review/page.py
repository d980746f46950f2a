"""The report page: one self-contained HTML file (styles inline, pictures as data: URIs), readable
offline and attachable anywhere. Timelines are matplotlib PNGs, previews the GIFs `previews` cut."""

from __future__ import annotations

import base64
import html
import io

from vad.review.night import Night

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#1d232a;background:#f6f7f9}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}.muted{color:#5b6673}
.totals{display:flex;gap:12px;flex-wrap:wrap}.total{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:10px 16px}
.total b{display:block;font-size:22px}.flag b{color:#c62828}
table{border-collapse:collapse;background:#fff}td,th{border:1px solid #dde1e6;padding:4px 10px;text-align:left}
th{background:#eef1f4}.num{text-align:right;font-variant-numeric:tabular-nums}
.timeline{background:#fff;border:1px solid #dde1e6;border-radius:8px;margin:8px 0;max-width:100%}
.clips{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:14px}
.clip{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:10px}.clip h3{margin:0 0 6px;font-size:15px}
.clip img{display:block;max-width:100%;border-radius:4px;margin-bottom:6px}.clip table{width:100%;font-size:12.5px}
code{background:#eef1f4;padding:2px 4px;border-radius:4px;font-size:12px;word-break:break-all}
.note{background:#fff8e1;border:1px solid #ffe08a;border-radius:8px;padding:10px 14px}
.bad{color:#c62828}
"""


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def timeline_png(camera: str, rows: list[dict], top_ids: dict[str, int]) -> bytes:
    """The camera's clip scores over its night's footage (videos end to end, boundaries dotted), the
    threshold, flagged clips shaded, the report's top clips numbered."""
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


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}g}" if isinstance(value, float) else html.escape(str(value))


def _clip_card(rank: int, clip: dict, preview: dict | None, results_uri: str) -> str:
    sql = f"SELECT * FROM scores WHERE clip_id = '{clip['clip_id']}'"
    command = f'vad query --results {results_uri} "{sql}"'
    if preview and preview.get("gif"):
        pictures = (f'<img class="preview" alt="clip {rank} preview" src="{data_uri(preview["gif"], "image/gif")}">'
                    f'<img class="strip" alt="clip {rank} key frames" src="{data_uri(preview["strip"], "image/jpeg")}">')
    else:
        why = html.escape(preview.get("error", "") if preview else "not cut")
        pictures = f'<p class="bad">no preview: {why}</p>'
    ratio = clip["score"] / clip["threshold"] if clip["threshold"] else None
    facts = [
        ("camera", html.escape(clip["camera"])), ("video", html.escape(clip["video_uri"])),
        ("time in video", f"{clip['start_time_s']:.1f}–{clip['end_time_s']:.1f} s (frames {clip['start_frame']}–{clip['end_frame']})"),
        ("score", f'<span class="score">{clip["score"]:.6g}</span>'
                  + (f" ({ratio:.2f}× threshold)" if ratio is not None else "")),
        ("threshold", _fmt(clip["threshold"], 6)),
        ("model", f"{html.escape(str(clip['model_name']))}, version {html.escape(str(clip['model_version']))}"
                  + (" (fallback)" if clip.get("model_fallback") else "")),
        ("heat map", "overlaid (red), mask outlined (yellow)" if clip.get("heatmap_png") is not None and len(clip["heatmap_png"]) else "–"),
        *([("why", f'<span class="reason">{html.escape(clip["reason"])}</span>')] if clip.get("reason") else []),
        *([("objects", f'<span class="objects">{len(clip["objects"])} boxed: '
                       + html.escape(", ".join(f"{o['label']} {o['score']:.1f} ({o['attribute']})" for o in clip["objects"])) + "</span>")]
          if clip.get("objects") else []),
        ("row in SQL", f"<code>{html.escape(command)}</code>"),
    ]
    rows = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts)
    return (f'<article class="clip" data-rank="{rank}" data-score="{clip["score"]!r}" data-clip-id="{html.escape(clip["clip_id"])}" '
            f'data-boxes="{len(clip.get("objects") or [])}">'
            f"<h3>#{rank} · {html.escape(clip['camera'])}</h3>{pictures}<table>{rows}</table></article>")


def render(night: Night, previews: dict[str, dict], *, title: str = "vad nightly review", generated_at: str = "") -> str:
    """The page of `night`; `previews` maps clip_id -> {gif, strip, error}."""
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)} {night.date or ''}</title>",
             f"<style>{STYLE}</style></head><body>", f"<h1>{html.escape(title)} — {night.date or 'no results'}</h1>"]
    runs = ", ".join(night.run_ids) or "–"
    parts.append(f"<p class='muted'>results {html.escape(night.results_uri)} · runs {html.escape(runs)}"
                 f"{' · generated ' + html.escape(generated_at) if generated_at else ''}</p>")
    if night.date is None:
        parts.append("<p class=\"note\" id=\"message\">No results: the results hold no scored clips"
                     f"{' for run ' + html.escape(night.run_id) if night.run_id else ''}.</p></body></html>")
        return "".join(parts)
    t = night.totals
    parts.append("<section class='totals'>" + "".join(
        f"<div class='total{' flag' if key == 'flagged' and t[key] else ''}'><b id=\"total-{key}\">{t[key]}</b>{key}</div>"
        for key in ("cameras", "videos", "clips", "flagged", "errors")) + "</section>")
    parts.append("<h2>By camera</h2><table><tr><th>camera</th><th>videos</th><th>clips</th><th>flagged</th><th>errors</th>"
                 "<th>max score</th><th>threshold</th></tr>")
    for cam in night.cameras:
        parts.append(f"<tr><td>{html.escape(cam['camera'])}</td><td class='num'>{cam['videos']}</td><td class='num'>{cam['clips']}</td>"
                     f"<td class='num'>{cam['flagged'] or 0}</td><td class='num'>{cam['errors']}</td>"
                     f"<td class='num'>{_fmt(cam['max_score'])}</td><td class='num'>{_fmt(cam['threshold'])}</td></tr>")
    parts.append("</table>")
    top_ids = {clip["clip_id"]: rank for rank, clip in enumerate(night.top, 1)}
    parts.append("<h2>Scores over the night</h2>")
    for camera, rows in night.timelines.items():
        png = timeline_png(camera, rows, top_ids)
        parts.append(f"<img class='timeline' alt='{html.escape(camera)} timeline' src='{data_uri(png, 'image/png')}'>")
    parts.append(f"<h2>Top {len(night.top)} flagged clips</h2>")
    if not t["flagged"]:
        parts.append("<p class=\"note\" id=\"message\">No flagged clips this night: no clip scored above its model's threshold.</p>")
    elif not night.top:
        parts.append(f"<p class=\"note\">{t['flagged']} flagged clips; none shown (the report was asked for the top 0).</p>")
    else:
        parts.append("<section class='clips'>" + "".join(
            _clip_card(rank, clip, previews.get(clip["clip_id"]), night.results_uri) for rank, clip in enumerate(night.top, 1)
        ) + "</section>")
    if night.errors:
        parts.append(f"<h2>Errors ({len(night.errors)})</h2><table><tr><th>object</th><th>stage</th><th>error</th><th>retried</th></tr>")
        for err in night.errors[:200]:
            parts.append(f"<tr><td>{html.escape(err['uri'])}</td><td>{html.escape(err['stage'])}</td>"
                         f"<td>{html.escape(err['error_class'])}: {html.escape((err['message'] or '')[:300])}</td>"
                         f"<td>{'no (bad object)' if err['permanent'] else 'next run'}</td></tr>")
        parts.append("</table>")
    parts.append(f"<script>{CHECK_IMAGES}</script></body></html>")
    return "".join(parts)


# Once the page has loaded: any picture the browser could not decode is named on its card, and the
# counts are kept on <body> (data-images-loaded / data-images-broken) for whoever checks the page.
CHECK_IMAGES = """
window.addEventListener('load', function () {
  var ok = 0, broken = 0;
  document.querySelectorAll('img').forEach(function (img) {
    if (img.complete && img.naturalWidth > 0) { ok += 1; return; }
    broken += 1;
    var note = document.createElement('p'); note.className = 'bad'; note.textContent = 'this picture did not load';
    img.replaceWith(note);
  });
  document.body.dataset.imagesLoaded = ok; document.body.dataset.imagesBroken = broken;
});
"""
