"""The review page's parts without Ray: previews cut exactly the clip's frames, overlays, the page's
sections and messages, and HTML escaping of what comes from the data."""

import io

import numpy as np
from helpers import frame_index_of, known_frames
from PIL import Image

from vad.config import SourceConfig
from vad.io.sources import list_videos
from vad.results.tables import encode_heatmap, encode_mask
from vad.review.night import Night
from vad.review.page import render
from vad.review.previews import ClipPreviews, clip_frames, gif_bytes, overlay, strip_bytes
from vad.review.report import preview_task
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


def test_the_stage_gives_an_animated_gif_and_a_strip_with_the_heat_map_laid_over(tmp_path):
    video = _video(tmp_path)
    heat = np.zeros((16, 24), np.float32)
    heat[8:, 12:] = 2.0  # the lower right quarter is "anomalous"
    mask = np.zeros((64, 96), bool)
    mask[32:, 48:] = True
    clip = {"heatmap_png": [encode_heatmap(heat)[0]] * 4, "heatmap_scale": [encode_heatmap(heat)[1]] * 4,
            "mask_png": [encode_mask(mask)] * 4}
    out = ClipPreviews(width=192)({"clip_id": np.array(["c1"]), "task": np.array([preview_task(clip, video.to_row(), [0, 1, 2, 3])])})
    assert out["error"][0] == ""
    gif = Image.open(io.BytesIO(out["gif"][0]))
    assert gif.n_frames == 4 and gif.size == (192, 128)
    rgb = np.asarray(gif.convert("RGB")).astype(int)
    assert rgb[100, 160, 0] - rgb[100, 160, 1] > 60 and abs(rgb[20, 20, 0] - rgb[20, 20, 1]) < 10  # red only where hot
    strip = Image.open(io.BytesIO(out["strip"][0]))
    assert strip.size == (4 * 192, 128)


def test_a_missing_video_is_an_error_on_its_card_not_a_failed_page(tmp_path):
    video = _video(tmp_path)
    row = video.to_row()
    (tmp_path / "cam03" / "2026-11-24" / "night.mp4").unlink()
    out = ClipPreviews()({"clip_id": np.array(["c1"]), "task": np.array([preview_task({}, row, [0, 1])])})
    assert out["gif"][0] == b"" and out["error"][0]


def test_overlay_and_encoders_keep_frame_count_and_size():
    frames = np.stack([np.full((40, 60, 3), 60 + 40 * i, np.uint8) for i in range(3)])
    same = overlay(frames, None, None)
    assert np.array_equal(same, frames)
    assert Image.open(io.BytesIO(gif_bytes(frames))).n_frames == 3
    assert Image.open(io.BytesIO(strip_bytes(frames))).size == (180, 40)


def _night(top: list[dict], flagged: int = 2) -> Night:
    timeline = [{"video_uri": "s3://b/cam<1>/v.mp4", "clip_id": f"c{i}", "start_time_s": i * 0.5, "end_time_s": i * 0.5 + 0.6,
                 "score": s, "threshold": 0.5, "is_anomaly": s > 0.5} for i, s in enumerate([0.1, 0.7, 0.9, 0.2])]
    return Night("s3://b/results", "2026-11-24", None, ["r1"], {"cameras": 1, "videos": 1, "clips": 4, "flagged": flagged, "errors": 0},
                 [{"camera": "cam<1>", "videos": 1, "clips": 4, "flagged": 2, "errors": 0, "max_score": 0.9, "threshold": 0.5}],
                 {"cam<1>": timeline}, top, [])


def test_the_page_escapes_data_and_says_when_nothing_was_flagged():
    page = render(_night([], flagged=0), {})
    assert "cam&lt;1&gt;" in page and "cam<1>" not in page
    assert 'id="message"' in page and "No flagged clips this night" in page
    assert "2 flagged clips; none shown" in render(_night([]), {})
    assert page.count("<img class='timeline'") == 1
    empty = render(Night("s3://b/results", None, None), {})
    assert "No results" in empty and "<img" not in empty


def test_cards_in_rank_order_with_the_sql_to_find_each_row():
    top = [{"camera": "cam<1>", "video_uri": "s3://b/cam<1>/v.mp4", "clip_id": cid, "start_frame": 8, "end_frame": 23, "frame_step": 1,
            "start_time_s": 0.3, "end_time_s": 0.9, "score": score, "threshold": 0.5, "model_name": "vad-conv-ae.cam01",
            "model_version": "3", "model_fallback": False, "heatmap_png": None}
           for cid, score in (("c2", 0.9), ("c1", 0.7))]
    page = render(_night(top), {"c2": {"gif": b"GIF89a", "strip": b"\xff\xd8", "error": ""}, "c1": {"gif": b"", "strip": b"", "error": "gone"}})
    assert page.index('data-clip-id="c2"') < page.index('data-clip-id="c1"')
    assert "SELECT * FROM scores WHERE clip_id = &#x27;c2&#x27;" in page
    assert "vad-conv-ae.cam01, version 3" in page and "1.80× threshold" in page
    assert "no preview: gone" in page
