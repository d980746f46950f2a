import re

import pytest

from vad.config import DEFAULT_KEY_PATTERN, SourceConfig
from vad.io.sources import identify, list_videos, validate_camera, validate_date

PATTERN = re.compile(DEFAULT_KEY_PATTERN)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("cam01/2026-11-24/clip.mp4", ("cam01", "2026-11-24")),
        ("site-a/lobby_2/20261124/x.mkv", ("lobby_2", "2026-11-24")),
        ("loose.mp4", ("default", "2026-01-01")),
    ],
)
def test_identify_with_default_pattern(key, expected):
    assert identify(key, PATTERN, "default", "2026-01-01") == expected


def test_custom_pattern():
    pattern = re.compile(r"(?P<camera>cam\d+)_(?P<date>\d{8})_\d+\.mp4$")
    assert identify("exports/cam9_20250102_0007.mp4", pattern, "x", "2026-01-01") == ("cam9", "2025-01-02")


@pytest.mark.parametrize("camera", ["..", "../etc", "a/b", "", "cam 1", "x" * 65, ".hidden", "cam\n1"])
def test_unsafe_camera_ids_rejected(camera):
    with pytest.raises(ValueError):
        validate_camera(camera)


@pytest.mark.parametrize("date", ["2026-13-01", "2026-02-30", "26-01-01", "2026/01/01", "../2026"])
def test_bad_dates_rejected(date):
    with pytest.raises(ValueError):
        validate_date(date)


def test_listing_sorts_and_rejects(tmp_path):
    (tmp_path / "cam02" / "2026-11-24").mkdir(parents=True)
    (tmp_path / "cam01" / "2026-11-23").mkdir(parents=True)
    (tmp_path / "cam02" / "2026-11-24" / "b.mp4").write_bytes(b"x" * 10)
    (tmp_path / "cam01" / "2026-11-23" / "a.MP4").write_bytes(b"y")
    (tmp_path / "cam01" / "2026-11-23" / "notes.txt").write_text("hello")
    (tmp_path / "bad cam" / "2026-11-24").mkdir(parents=True)
    (tmp_path / "bad cam" / "2026-11-24" / "c.mp4").write_bytes(b"z")
    videos, rejected = list_videos(SourceConfig(uri=str(tmp_path)))
    assert [(v.key, v.camera, v.date, v.size) for v in videos] == [
        ("cam01/2026-11-23/a.MP4", "cam01", "2026-11-23", 1),
        ("cam02/2026-11-24/b.mp4", "cam02", "2026-11-24", 10),
    ]
    reasons = {r.uri.rsplit("/", 1)[-1]: r.reason for r in rejected}
    assert "not a video" in reasons["notes.txt"]
    assert "camera id" in reasons["c.mp4"]


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_videos(SourceConfig(uri=str(tmp_path / "nothing")))
