import re

import pytest

from vad.config import DEFAULT_KEY_PATTERN, SourceConfig
from vad.io.sources import identify, list_videos, looks_like_video, scan_source, validate_camera, validate_date

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
    assert list(reasons) == ["c.mp4"] and "camera id" in reasons["c.mp4"]
    skipped = scan_source(SourceConfig(uri=str(tmp_path))).skipped
    assert [(r.uri.rsplit("/", 1)[-1], r.reason) for r in skipped] == [("notes.txt", "not video (by name and first bytes)")]


def _write(root, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def test_sidecar_files_are_skipped_not_rejected(tmp_path):
    """A real archive keeps labels, checksums, MATLAB files and thumbnails beside its videos."""
    from vad.testing.synthetic import encode_mp4, render_scene

    mp4 = encode_mp4(render_scene(1, 12, height=32, width=48).frames)
    _write(tmp_path, {
        "cam01/2026-11-24/a.mp4": mp4,
        "cam01/2026-11-24/a.json": b'{"labels": []}',
        "cam01/2026-11-24/a.mat": b"MATLAB 5.0 MAT-file",
        "cam01/2026-11-24/a.mp4.md5": b"d41d8cd98f00b204e9800998ecf8427e",
        "cam01/2026-11-24/a.jpg": b"\xff\xd8\xff thumbnail",
        "cam01/2026-11-24/export_0001": mp4,  # no extension, but an MP4 by its first bytes
        "cam02/2026-11-24/frames/000.png": b"png", "cam02/2026-11-24/frames/001.png": b"png",
        "labels.json": b"{}",
        ".DS_Store": b"hidden",
    })
    listing = scan_source(SourceConfig(uri=str(tmp_path)))
    assert [(v.key, v.kind) for v in listing.videos] == [
        ("cam01/2026-11-24/a.mp4", "video"),
        ("cam01/2026-11-24/export_0001", "video"),
        ("cam02/2026-11-24/frames", "frames"),
    ]
    assert listing.rejected == []
    assert sorted(r.uri.rsplit("/", 1)[-1] for r in listing.skipped) == ["a.jpg", "a.json", "a.mat", "a.mp4.md5", "labels.json"]
    assert "sidecar" in next(r.reason for r in listing.skipped if r.uri.endswith("a.jpg"))


def test_include_and_exclude_choose_what_is_considered(tmp_path):
    _write(tmp_path, {"cam01/d/a.mp4": b"x", "cam01/d/b.avi": b"x", "cam02/d/c.mp4": b"x", "cam02/d/notes.txt": b"x"})
    keys = lambda **kw: [v.key for v in scan_source(SourceConfig(uri=str(tmp_path), **kw)).videos]  # noqa: E731
    assert keys(include=["cam01/*"]) == ["cam01/d/a.mp4", "cam01/d/b.avi"]
    assert keys(exclude=["*.avi"]) == ["cam01/d/a.mp4", "cam02/d/c.mp4"]
    assert keys(include=["*.mp4"], exclude=["cam02/*"]) == ["cam01/d/a.mp4"]
    listing = scan_source(SourceConfig(uri=str(tmp_path), include=["cam01/*"]))
    assert listing.skipped == []  # what is not considered is not counted either


@pytest.mark.parametrize(
    ("head", "video"),
    [
        (b"\x00\x00\x00\x20ftypisom" + bytes(180), True),
        (b"\x1a\x45\xdf\xa3" + bytes(188), True),
        (b"RIFF\x00\x00\x00\x00AVI LIST" + bytes(176), True),
        (b"\x47" + bytes(187) + b"\x47" + bytes(3), True),
        (b"%PDF-1.7" + bytes(184), False),
        (b'{"labels": []}', False),
        (b"", False),
    ],
)
def test_container_sniffing(head, video):
    assert looks_like_video(head) is video


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_videos(SourceConfig(uri=str(tmp_path / "nothing")))
