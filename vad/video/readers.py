"""Video readers: decord (the default), PyAV (FFmpeg), and folders of image frames.

Each reader has `len`, `batch(indices)`, `times(first, last)` and `close()`. Memory stays bounded by
one clip whatever the video's length: decord
seeks and decodes only the frames a clip needs, resizing inside the decoder.
Small objects are decoded from memory (no temp file); objects above
`max_in_memory_mb` are streamed to a temp file first, since decord would
otherwise copy the whole compressed object into RAM.
"""

from __future__ import annotations

import bisect
import contextlib
import io
import os
import tempfile

import numpy as np

from vad.config import DecodeConfig, StorageConfig
from vad.io.sources import VideoRef
from vad.io.storage import open_uri, read_path, whole_read_attempts, with_retries


class BadVideo(Exception):
    """The object itself cannot be scored (empty, corrupt, too short, unreadable frame): the job
    records it and does not try it again until the object changes."""

    stage = "open"


class EmptyObject(BadVideo):
    pass


class CorruptVideo(BadVideo):
    pass


class CorruptFrame(BadVideo):
    stage = "decode"


class TooShort(BadVideo):
    pass


FOLDER_FPS = 10.0  # frame folders carry no timing; UCSD Ped2 was recorded at 10 fps
_SPOOL_CHUNK = 8 << 20


def to_gray(frames: np.ndarray) -> np.ndarray:
    if frames.ndim == 3:
        return frames
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.clip(frames[..., :3].astype(np.float32) @ weights + 0.5, 0, 255).astype(np.uint8)


def _resize(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(T, H, W, C) uint8 -> (T, h, w, C) with antialiased bilinear filtering."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


class _FolderReader:
    """Frames from a folder of images, loaded lazily and cached only across one clip overlap."""

    def __init__(self, frames: tuple[str, ...], decode: DecodeConfig, storage: StorageConfig | None):
        self.frames = frames
        self.decode = decode
        self.storage = storage
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.frames)

    def _load(self, index: int) -> np.ndarray:
        from PIL import Image

        fs, path = open_uri(self.frames[index], self.storage)
        data = read_path(fs, path, self.storage)
        try:
            image = Image.open(io.BytesIO(data))
            image.load()
        except Exception as exc:  # PIL raises OSError, ValueError, SyntaxError... on bad files
            raise CorruptFrame(f"frame {index} ({self.frames[index].rsplit('/', 1)[-1]}): {exc}") from exc
        image = image.convert("L" if self.decode.grayscale else "RGB")
        if self.decode.resize is not None:
            height, width = self.decode.resize
            image = image.resize((width, height), Image.BILINEAR)
        return np.asarray(image, dtype=np.uint8)

    def batch(self, indices: list[int]) -> np.ndarray:
        loaded = {i: self._cache.get(i) if i in self._cache else self._load(i) for i in indices}
        self._cache = loaded
        shapes = {loaded[i].shape for i in indices}
        if len(shapes) > 1:
            raise CorruptFrame(f"frames {indices[0]}..{indices[-1]} differ in size {sorted(shapes)}; set decode.resize")
        return np.stack([loaded[i] for i in indices])

    def times(self, first: int, last: int) -> tuple[float, float]:
        return first / FOLDER_FPS, (last + 1) / FOLDER_FPS

    def close(self) -> None:
        self._cache = {}


class _VideoReader:
    def __init__(self, source, decode: DecodeConfig):
        import decord

        try:
            self._open(source, decode)
        except (RuntimeError, decord.DECORDError) as exc:  # decord raises both on corrupt input
            raise CorruptVideo(f"cannot open: {exc}") from None
        if len(self.reader) == 0:
            raise CorruptVideo("no decodable frames")

    def _open(self, source, decode: DecodeConfig) -> None:
        import decord

        self.decode = decode
        self.post_resize: tuple[int, int] | None = None
        # decord 0.6 fails to copy frames out for some output widths (e.g. 16, 24, 48, 72 px):
        # probe the first frame and fall back to a wider decoder size plus a resize of our own.
        candidates: list[tuple[int, int] | None] = [decode.resize] if decode.resize else [None]
        if decode.resize is not None:
            height, width = decode.resize
            candidates += [(height, -(-width // 64) * 64), None]
        error: Exception | None = None
        for size in candidates:
            kwargs = {"num_threads": 1}
            if size is not None:
                kwargs["height"], kwargs["width"] = size
            if hasattr(source, "seek"):
                source.seek(0)
            try:
                self.reader = decord.VideoReader(source, ctx=decord.cpu(0), **kwargs)
                if len(self.reader):
                    self.reader.get_batch([0])
            except decord.DECORDError as exc:
                error = exc
                continue
            self.post_resize = decode.resize if size != decode.resize else None
            return
        raise error  # type: ignore[misc]

    def batch(self, indices: list[int]) -> np.ndarray:
        import decord

        try:
            frames = self.reader.get_batch(indices).asnumpy()
        except (RuntimeError, decord.DECORDError) as exc:
            raise CorruptFrame(f"frames {indices[0]}..{indices[-1]}: {exc}") from None
        if self.post_resize is not None:
            frames = _resize(frames, self.post_resize)
        return to_gray(frames) if self.decode.grayscale else frames

    def __len__(self) -> int:
        return len(self.reader)

    def times(self, first: int, last: int) -> tuple[float, float]:
        # Per-frame timestamps, so variable-frame-rate footage gets true times.
        stamps = self.reader.get_frame_timestamp([first, last])
        return float(stamps[0][0]), float(stamps[1][1])

    def close(self) -> None:
        self.reader = None  # decord frees its decoder with the object


class _PyAVReader:
    """The `pyav` backend: FFmpeg's decoder through PyAV, the same interface as `_VideoReader`.

    Opening demuxes the whole stream once without decoding (exact frame count, per-frame
    timestamps, keyframes). Frames are then decoded forward; a read that lies behind the
    decoder, or past a keyframe, seeks to the nearest keyframe first. Frames that are not
    needed are decoded but never converted; the ones needed are scaled and converted to gray
    or RGB by swscale in one step."""

    def __init__(self, source, decode: DecodeConfig):
        import av

        self.decode = decode
        self.container = None
        try:
            self.container = av.open(source, mode="r")
            self.stream = self.container.streams.video[0]
            self._index()
        except (av.FFmpegError, IndexError, ValueError, OSError) as exc:
            self.close()
            raise CorruptVideo(f"cannot open: {exc}") from None
        if not self.pts:
            self.close()
            raise CorruptVideo("no decodable frames")
        self.stream.thread_type = "AUTO" if decode.threads > 1 else "SLICE"
        self.stream.codec_context.thread_count = decode.threads
        self._frames = None  # the decoding generator, positioned before frame `_next`
        self._next = 0

    def _index(self) -> None:
        stamps: list[tuple[int, int, bool]] = []
        for packet in self.container.demux(self.stream):
            stamp = packet.pts if packet.pts is not None else packet.dts
            if stamp is None or packet.size == 0:
                continue
            stamps.append((stamp, packet.duration or 0, packet.is_keyframe))
        stamps.sort()
        self.pts = [s for s, _, _ in stamps]
        self.index_of = {s: i for i, s in enumerate(self.pts)}
        typical = int(np.median(np.diff(self.pts))) if len(self.pts) > 1 else 1
        self.durations = [d or typical for _, d, _ in stamps]
        self.keyframes = [i for i, (_, _, key) in enumerate(stamps) if key] or [0]
        self.time_base = float(self.stream.time_base)
        self.start = self.pts[0] if self.pts else 0

    def __len__(self) -> int:
        return len(self.pts)

    def _seek(self, index: int) -> None:
        key = self.keyframes[max(0, bisect.bisect_right(self.keyframes, index) - 1)]
        self.container.seek(self.pts[key], stream=self.stream, backward=True, any_frame=False)
        self._frames = self.container.decode(self.stream)
        self._next = -1  # unknown until the first frame after the seek arrives

    def _frame(self, index: int):
        import av

        key = self.keyframes[max(0, bisect.bisect_right(self.keyframes, index) - 1)]
        if self._frames is None or index < self._next or key > self._next:
            self._seek(index)
        try:
            for frame in self._frames:
                position = self.index_of.get(frame.pts if frame.pts is not None else -1, -1)
                self._next = position + 1 if position >= 0 else self._next
                if position == index:
                    return frame
                if position > index:
                    break
        except av.FFmpegError as exc:
            raise CorruptFrame(f"frame {index}: {exc}") from None
        self._frames = None
        raise CorruptFrame(f"frame {index} of {len(self)} could not be decoded")

    def batch(self, indices: list[int]) -> np.ndarray:
        height, width = self.decode.resize if self.decode.resize else (None, None)
        fmt = "gray" if self.decode.grayscale else "rgb24"
        return np.stack([self._frame(i).to_ndarray(width=width, height=height, format=fmt) for i in indices])

    def times(self, first: int, last: int) -> tuple[float, float]:
        return (
            (self.pts[first] - self.start) * self.time_base,
            (self.pts[last] + self.durations[last] - self.start) * self.time_base,
        )

    def close(self) -> None:
        """Release the FFmpeg demuxer and decoder (file handles, buffers) now, not at garbage collection."""
        self._frames = None
        if self.container is not None:
            self.container.close()
            self.container = None


def _reader(source, decode: DecodeConfig):
    return _PyAVReader(source, decode) if decode.backend == "pyav" else _VideoReader(source, decode)


@contextlib.contextmanager
def open_video(video: VideoRef, decode: DecodeConfig, storage: StorageConfig | None = None):
    """A reader with `len`, `batch(indices)` and `times(first, last)`, closed on exit."""
    with contextlib.ExitStack() as stack:
        yield stack.enter_context(contextlib.closing(_open_reader(video, decode, storage, stack)))


def _open_reader(video: VideoRef, decode: DecodeConfig, storage: StorageConfig | None, stack: contextlib.ExitStack):
    if video.kind == "frames":
        return _FolderReader(video.frames, decode, storage)
    if video.size == 0:
        raise EmptyObject("zero-byte object")
    fs, path = open_uri(video.uri, storage)
    if fs.type_name == "local":
        return _reader(path, decode)
    if video.size <= decode.max_in_memory_mb << 20:
        return _reader(io.BytesIO(read_path(fs, path, storage)), decode)
    spool = stack.enter_context(tempfile.NamedTemporaryFile(suffix=os.path.splitext(path)[1], prefix="vad-spool-"))

    def spool_object() -> None:
        spool.seek(0)
        spool.truncate()
        with fs.open_input_stream(path) as stream:
            while chunk := stream.read(_SPOOL_CHUNK):
                spool.write(chunk)
        spool.flush()

    with_retries(spool_object, whole_read_attempts(storage), f"spooling {path}")
    return _reader(spool.name, decode)
