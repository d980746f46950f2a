"""List the videos under a source URI.

A video is one object with a video extension (or a video container's first bytes), or a folder
of image frames (UCSD Ped2 style: `Test001/001.tif ...`), which counts as one video whose frames are
sorted by name. Everything else (labels, checksums, thumbnails beside videos) is skipped, not failed. Camera id and date are read from the object's full
path (bucket/key, or the absolute local path) with a configurable regex, then
validated, because they become partition folder names.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field

import pyarrow.fs as pafs

from vad.config import SourceConfig, StorageConfig
from vad.io.storage import filesystem, parse_uri

_CAMERA_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class VideoRef:
    uri: str  # full uri of the object, or of the frame folder
    key: str  # path relative to the source root
    kind: str  # "video" | "frames"
    size: int  # bytes (sum of frames for a folder)
    mtime: float  # seconds since epoch, newest member for a folder
    camera: str
    date: str  # ISO yyyy-mm-dd
    frames: tuple[str, ...] = field(default=())  # frame uris for kind == "frames"
    # a span of the video (training on the footage of an event marked normal): only clips starting in it are cut
    first_frame: int | None = None
    last_frame: int | None = None

    def to_row(self) -> dict:
        row = asdict(self)
        row["frames"] = list(self.frames)
        return row

    @staticmethod
    def from_row(row: dict) -> "VideoRef":
        values = {k: row.get(k) for k in VideoRef.__dataclass_fields__}
        values["frames"] = tuple(values["frames"] if values["frames"] is not None else ())
        for k in ("first_frame", "last_frame"):  # None, or a float NaN after a trip through a numeric column
            value = values[k]
            values[k] = None if value is None or value != value else int(value)
        return VideoRef(**values)


@dataclass(frozen=True)
class Rejected:
    uri: str
    reason: str
    size: int = 0
    mtime: float = 0.0


def validate_camera(camera: str) -> str:
    if not _CAMERA_RE.match(camera) or ".." in camera:
        raise ValueError(f"camera id {camera!r} is not allowed (letters, digits, '_', '-', '.', at most 64)")
    return camera


def validate_date(text: str) -> str:
    digits = text.replace("-", "")
    if not re.fullmatch(r"\d{8}", digits):
        raise ValueError(f"date {text!r} is not yyyy-mm-dd or yyyymmdd")
    try:
        return dt.date(int(digits[:4]), int(digits[4:6]), int(digits[6:])).isoformat()
    except ValueError as exc:
        raise ValueError(f"date {text!r} is not a calendar date: {exc}") from None


def identify(key: str, pattern: re.Pattern, default_camera: str, default_date: str) -> tuple[str, str]:
    """Camera and ISO date for a key; groups the pattern lacks fall back to the defaults."""
    match = pattern.search(key)
    groups = match.groupdict() if match else {}
    camera = validate_camera(groups.get("camera") or default_camera)
    date = validate_date(groups.get("date") or default_date)
    return camera, date


@dataclass(frozen=True)
class Listing:
    """What a source holds: videos to score, objects that claim to be video but cannot be taken
    (errors), and objects that are not video at all (skipped: sidecars, notes, thumbnails)."""

    videos: list[VideoRef]
    rejected: list[Rejected]
    skipped: list[Rejected]


# The first bytes of the containers FFmpeg and decord read: an object whose name says nothing still
# claims to be video when it starts like one.
def looks_like_video(head: bytes) -> bool:
    return (
        head[4:8] == b"ftyp"  # MP4, MOV, 3GP
        or head[:4] == b"\x1a\x45\xdf\xa3"  # Matroska, WebM
        or (head[:4] == b"RIFF" and head[8:12] == b"AVI ")
        or head[:3] == b"FLV"
        or head[:4] == b"\x30\x26\xb2\x75"  # ASF, WMV
        or head[:4] in (b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3")  # MPEG program stream, MPEG video
        or (len(head) > 188 and head[0] == 0x47 and head[188] == 0x47)  # MPEG transport stream
    )


SNIFF_BYTES = 192


def _sniff(fs: pafs.FileSystem, path: str) -> bytes:
    try:
        with fs.open_input_file(path) as handle:
            return handle.read_at(SNIFF_BYTES, 0)
    except OSError:
        return b""


def list_videos(
    source: SourceConfig,
    storage: StorageConfig | None = None,
    run_date: str | None = None,
) -> tuple[list[VideoRef], list[Rejected]]:
    """Every video under `source.uri`, sorted by key, and the video objects that cannot be taken, with why."""
    listing = scan_source(source, storage, run_date)
    return listing.videos, listing.rejected


def scan_source(source: SourceConfig, storage: StorageConfig | None = None, run_date: str | None = None) -> Listing:
    """Everything under `source.uri` that `source.include` / `source.exclude` let through, sorted out into
    videos, rejected video objects and skipped non-video objects (see `Listing`).

    A video is an object with a video extension, or whose first bytes are a video container's, or a
    folder of image frames. Images in a folder that also holds videos are sidecars (thumbnails), not
    frames. Hidden files (a name starting with '.') are not considered."""
    scan = _Scan(source, storage, run_date)
    folders = scan.objects()
    for folder, members in folders.items():
        scan.frame_folder(folder, members)
    scan.videos.sort(key=lambda v: v.key)
    return Listing(scan.videos, scan.rejected, scan.skipped)


class _Scan:
    """One listing of a source: what it found so far, and how it names and sorts what it finds."""

    def __init__(self, source: SourceConfig, storage: StorageConfig | None, run_date: str | None):
        self.source, self.root = source, parse_uri(source.uri)
        self.fs = filesystem(self.root, storage)
        self.pattern = re.compile(source.key_pattern)
        self.default_date = run_date or dt.date.today().isoformat()
        self.video_ext = tuple(e.lower() for e in source.video_extensions)
        self.frame_ext = tuple(e.lower() for e in source.frame_extensions)
        self.videos: list[VideoRef] = []
        self.rejected: list[Rejected] = []
        self.skipped: list[Rejected] = []
        self.video_folders: set[str] = set()

    def entries(self) -> tuple[list[pafs.FileInfo], str]:
        info = self.fs.get_file_info(self.root.path)
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"source {self.source.uri!r} does not exist")
        if info.type == pafs.FileType.File:
            return [info], self.root.path.rsplit("/", 1)[0]
        return [e for e in self.fs.get_file_info(pafs.FileSelector(self.root.path, recursive=True)) if e.is_file], self.root.path.rstrip("/")

    def to_uri(self, path: str) -> str:
        return f"s3://{path}" if self.root.scheme == "s3" else path

    def considered(self, key: str) -> bool:
        if key.rsplit("/", 1)[-1].startswith("."):
            return False
        if self.source.include and not any(fnmatch.fnmatchcase(key, p) for p in self.source.include):
            return False
        return not any(fnmatch.fnmatchcase(key, p) for p in self.source.exclude)

    def objects(self) -> dict[str, list[pafs.FileInfo]]:
        """Videos, rejected and skipped objects sorted out; returns the folders of frame images, for `frame_folder`."""
        entries, self.base = self.entries()
        folders: dict[str, list[pafs.FileInfo]] = defaultdict(list)
        for entry in entries:
            key = entry.path[len(self.base) :].lstrip("/")
            if not self.considered(key):
                continue
            name = key.lower()
            mtime = entry.mtime.timestamp() if entry.mtime else 0.0
            if name.endswith(self.video_ext) or (not name.endswith(self.frame_ext) and entry.size
                                                 and looks_like_video(_sniff(self.fs, entry.path))):
                self.video(entry, key, mtime)
                self.video_folders.add(entry.path.rsplit("/", 1)[0])
            elif name.endswith(self.frame_ext):
                folders[entry.path.rsplit("/", 1)[0]].append(entry)
            else:
                self.skipped.append(Rejected(self.to_uri(entry.path), "not video (by name and first bytes)", entry.size or 0, mtime))
        return folders

    def video(self, entry: pafs.FileInfo, key: str, mtime: float) -> None:
        try:
            camera, date = identify(entry.path, self.pattern, self.source.default_camera, self.default_date)
        except ValueError as exc:
            self.rejected.append(Rejected(self.to_uri(entry.path), str(exc), entry.size or 0, mtime))
            return
        self.videos.append(VideoRef(self.to_uri(entry.path), key, "video", entry.size or 0, mtime, camera, date))

    def frame_folder(self, folder: str, members: list[pafs.FileInfo]) -> None:
        """A folder of frame images: one video, unless it is too short or its images sit beside videos (sidecars)."""
        key = folder[len(self.base) :].lstrip("/") or folder.rsplit("/", 1)[-1]
        size = sum(m.size or 0 for m in members)
        mtime = max((m.mtime.timestamp() if m.mtime else 0.0) for m in members)
        if folder in self.video_folders:  # thumbnails or stills beside videos
            self.skipped += [Rejected(self.to_uri(m.path), "an image beside videos (a sidecar, not a frame)", m.size or 0, mtime) for m in members]
            return
        if len(members) < self.source.min_frames_per_folder:
            self.rejected.append(Rejected(self.to_uri(folder), f"only {len(members)} frames", size, mtime))
            return
        try:
            camera, date = identify(folder, self.pattern, self.source.default_camera, self.default_date)
        except ValueError as exc:
            self.rejected.append(Rejected(self.to_uri(folder), str(exc), size, mtime))
            return
        members.sort(key=lambda e: e.path)
        self.videos.append(VideoRef(
            uri=self.to_uri(folder), key=key, kind="frames", size=size, mtime=mtime, camera=camera, date=date,
            frames=tuple(self.to_uri(m.path) for m in members),
        ))
