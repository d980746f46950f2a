"""The review page's parts without Ray: previews cut exactly the event's frames, overlays on the peak clip's
frames, the peak marked, the page's sections and messages, HTML escaping of what comes from the data, and which
model's rows a night shows per camera."""

import datetime as dt
import io

import numpy as np
from helpers import frame_index_of, hand_scored, known_frames, write_hand_scored
from PIL import Image

from vad.config import SourceConfig
from vad.io.sources import list_videos
from vad.results.tables import encode_heatmap, encode_mask
from vad.review.night import Night, read_night
from vad.review.page import render
from vad.review.previews import ClipPreviews, clip_frames, overlay, strip_bytes, webp_bytes
from vad.review.report import event_frames, preview_task
from vad.testing.synthetic import encode_mp4


def _video(tmp_path):
    path = tmp_path / "cam03" / "2026-11-24" / "night.mp4"
    path.parent.mkdir(parents=True)
    path.write_bytes(encode_mp4(known_frames(30)))
    videos, _ = list_videos(SourceConfig(uri=str(path)), run_date="2026-11-24")
    return videos[0]


def test_a_preview_decodes_exactly_the_clips_frames(tmp_path):
    video = _video(tmp_path)
    frames = clip_frames(video, [10, 12, 14, 16], None)
    assert frames.shape[0] == 4 and frames.shape[-1] == 3
    assert [frame_index_of(f[..., 0]) for f in frames] == [10, 12, 14, 16]


def test_the_stage_gives_an_animated_webp_of_the_event_with_the_peak_framed_and_the_heat_map_on_the_peak_clip(tmp_path):
    video = _video(tmp_path)
    heat = np.zeros((16, 24), np.float32)
    heat[8:, 12:] = 2.0  # the lower right quarter is "anomalous"
    mask = np.zeros((64, 96), bool)
    mask[32:, 48:] = True
    # an event over frames 0-11, its peak clip frames 4-7 (the only frames with heat maps), its peak frame 6
    event = {"heatmap_png": [encode_heatmap(heat)[0]] * 4, "heatmap_scale": [encode_heatmap(heat)[1]] * 4,
             "mask_png": [encode_mask(mask)] * 4, "peak_start": 4, "frame_step": 1, "peak_frame": 6}
    frames = list(range(0, 12, 2))
    out = ClipPreviews(width=192)({"event_id": np.array(["e1"]), "task": np.array([preview_task(event, video.to_row(), frames)])})
    assert out["error"][0] == ""
    animation = Image.open(io.BytesIO(out["animation"][0]))
    assert animation.format == "WEBP" and animation.n_frames == 6 and animation.size == (192, 128)

    def rgb(t):
        animation.seek(t)
        return np.asarray(animation.convert("RGB")).astype(int)

    hot = rgb(2)  # frame 4: in the peak clip
    assert hot[100, 160, 0] - hot[100, 160, 1] > 60 and abs(hot[50, 50, 0] - hot[50, 50, 1]) < 15  # red only where hot
    cold = rgb(0)  # frame 0: before the peak clip, no heat map
    assert abs(cold[100, 160, 0] - cold[100, 160, 1]) < 15
    peak = rgb(3)  # frame 6: the peak, framed in red
    assert peak[0, 96, 0] > 150 and peak[0, 96, 1] < 90 and abs(hot[0, 96, 0] - hot[0, 96, 1]) < 15
    strip = Image.open(io.BytesIO(out["strip"][0]))
    assert strip.size == (4 * 192, 128)


def test_an_events_preview_frames_span_it_thinned_with_the_peak_kept():
    event = {"start_frame": 100, "end_frame": 499, "frame_step": 2, "peak_frame": 301}
    frames = event_frames(event, most=32)
    assert len(frames) <= 32 and frames[0] == 100 and frames[-1] == 498 and 301 in frames and frames == sorted(frames)
    assert event_frames({"start_frame": 0, "end_frame": 7, "frame_step": 1, "peak_frame": 3}) == list(range(8))


def test_a_missing_video_is_an_error_on_its_card_not_a_failed_page(tmp_path):
    video = _video(tmp_path)
    row = video.to_row()
    (tmp_path / "cam03" / "2026-11-24" / "night.mp4").unlink()
    out = ClipPreviews()({"event_id": np.array(["e1"]), "task": np.array([preview_task({}, row, [0, 1])])})
    assert out["animation"][0] == b"" and out["error"][0]


def test_overlay_and_encoders_keep_frame_count_and_size():
    frames = np.stack([np.full((40, 60, 3), 60 + 40 * i, np.uint8) for i in range(3)])
    same = overlay(frames, None, None)
    assert np.array_equal(same, frames)
    assert Image.open(io.BytesIO(webp_bytes(frames))).n_frames == 3
    assert Image.open(io.BytesIO(strip_bytes(frames))).size == (180, 40)


def _night(top: list[dict], flagged: int = 2, events: int = 1) -> Night:
    timeline = [{"video_uri": "s3://b/cam<1>/v.mp4", "clip_id": f"c{i}", "start_time_s": i * 0.5, "end_time_s": i * 0.5 + 0.6,
                 "score": s, "threshold": 0.5, "is_anomaly": s > 0.5} for i, s in enumerate([0.1, 0.7, 0.9, 0.2])]
    totals = {"cameras": 1, "videos": 1, "clips": 4, "flagged": flagged, "events": events, "errors": 0}
    cameras = [{"camera": "cam<1>", "model_name": "vad-conv-ae.cam<1>", "videos": 1, "clips": 4, "flagged": 2, "errors": 0, "max_score": 0.9, "threshold": 0.5,
                "hours": 2.1 / 3600, "events": events, "events_per_hour": events / (2.1 / 3600)}]
    return Night("s3://b/results", "2026-11-24", None, ["r1"], totals, cameras, {"cam<1>": timeline}, top, [])


def test_the_page_escapes_data_and_says_when_nothing_was_flagged():
    page = render(_night([], flagged=0, events=0), {})
    assert "cam&lt;1&gt;" in page and "cam<1>" not in page
    assert 'id="message"' in page and "No events this night" in page
    assert "1 events (2 flagged clips); none shown" in render(_night([]), {})
    assert "2 flagged clips but no events: they were scored before vad wrote events" in render(_night([], events=0), {})
    assert page.count('<img class="timeline"') == 1
    empty = render(Night("s3://b/results", None, None), {})
    assert "No results" in empty and "<img" not in empty


def _event(event_id: str, score: float, answer: str | None = None) -> dict:
    return {"event_id": event_id, "camera": "cam<1>", "video_uri": "s3://b/cam<1>/v.mp4", "start_frame": 8, "end_frame": 40, "frame_step": 1,
            "start_time_s": 0.3, "end_time_s": 1.6, "clips": 3, "peak_score": score, "score": score, "peak_clip_id": f"c-{event_id}",
            "clip_id": f"c-{event_id}", "peak_frame": 20, "threshold": 0.5, "model_name": "vad-conv-ae.cam01", "model_version": "3",
            "model_fallback": False, "heatmap_png": None, "reason": "<b>fast</b>" if score > 0.8 else None, "objects": [],
            "answer": answer, "answered_by": "ana" if answer else None, "answer_note": None}


def test_one_card_per_event_in_rank_order_with_what_to_answer_and_the_answered_marked():
    top = [_event("e2", 0.9), _event("e1", 0.7, answer="normal")]
    page = render(_night(top, events=2), {"e2": {"animation": b"RIFF", "strip": b"\xff\xd8", "error": ""},
                                          "e1": {"animation": b"", "strip": b"", "error": "gone"}})
    assert page.index('data-event-id="e2"') < page.index('data-event-id="e1"')
    assert "vad feedback e2 --normal --results s3://b/results" in page
    assert "SELECT * FROM events WHERE event_id = 'e2'" in page
    assert "vad-conv-ae.cam01, version 3" in page and "1.80× threshold" in page and "3 flagged clips" in page
    assert "&lt;b&gt;fast&lt;/b&gt;" in page and "<b>fast</b>" not in page  # autoescaped
    assert "no preview: gone" in page and 'src="data:image/webp;base64,' in page
    assert 'class="event answered-normal"' in page and "· dismissed" in page and 'data-answer="normal"' in page
    assert 'data-events-per-hour="' in page


def _scored(root: str, model: str, run_id: str, uri: str, camera: str, clips: int, clip_len: int, hour: int, score: float) -> None:
    """One video's scores file as `vad score` writes it: `clips` clips of `clip_len` frames, scored at `hour`."""
    batch = hand_scored(uri, model, "1", run_id, [[score] * clip_len for _ in range(clips)], clip_len=clip_len)
    write_hand_scored(root, camera, batch, f"len{clip_len}", dt.datetime(2026, 11, 25, hour, tzinfo=dt.timezone.utc))


def test_a_night_shows_each_camera_by_one_model(tmp_path):
    """cam01 scored by conv_ae (4-frame clips) and later by an object fleet's model (8-frame clips: other clip ids);
    cam02 by conv_ae only. By default each camera is shown by the model that scored it last, never a mix of two
    models' clips on one timeline; a model (a fleet's by its name without the camera) or a run can be asked for."""
    root = str(tmp_path / "results")
    _scored(root, "conv_ae", "run-a", "s3://b/cam01/v1.mp4", "cam01", 8, 4, hour=1, score=0.5)
    _scored(root, "conv_ae", "run-a", "s3://b/cam02/v2.mp4", "cam02", 8, 4, hour=1, score=0.5)
    _scored(root, "vad-objects.cam01", "run-b", "s3://b/cam01/v1.mp4", "cam01", 4, 8, hour=2, score=3.0)

    def shown(**ask) -> dict:
        night = read_night(root, **ask)
        assert night.date == "2026-11-24"
        by_camera = {c["camera"]: (c["model_name"], c["clips"]) for c in night.cameras}
        scores = {camera: sorted({row["score"] for row in rows}) for camera, rows in night.timelines.items()}
        return {camera: (*by_camera[camera], scores[camera]) for camera in by_camera}

    assert shown() == {"cam01": ("vad-objects.cam01", 4, [3.0]), "cam02": ("conv_ae", 8, [0.5])}
    assert shown(model="conv_ae") == {"cam01": ("conv_ae", 8, [0.5]), "cam02": ("conv_ae", 8, [0.5])}
    assert shown(model="vad-objects") == {"cam01": ("vad-objects.cam01", 4, [3.0])}
    assert shown(run_id="run-a") == shown(model="conv_ae")
    assert read_night(root, model="vad-other").date is None

