import numpy as np
import pytest
from helpers import frame_index_of, known_frames, level
from PIL import Image

from vad.config import DecodeConfig, SourceConfig
from vad.io.sources import VideoRef, list_videos
from vad.results.schema import decode_signature
from vad.testing.synthetic import encode_mp4
from vad.video.clips import clip_starts, iter_clip_batches, iter_clips, part_range, split_parts
from vad.video.readers import _reader, to_gray


@pytest.mark.parametrize(
    ("n", "clip_len", "stride", "step", "expected"),
    [
        (32, 16, 16, 1, [0, 16]),
        (33, 16, 16, 1, [0, 16, 17]),  # the tail frame gets a clip aligned to the end
        (15, 16, 16, 1, []),  # shorter than one clip
        (16, 16, 8, 1, [0]),
        (30, 4, 3, 2, [0, 3, 6, 9, 12, 15, 18, 21, 23]),
    ],
)
def test_clip_starts(n, clip_len, stride, step, expected):
    assert clip_starts(n, clip_len, stride, step) == expected


def test_clip_starts_cover_every_frame():
    for n in range(16, 80):
        covered = set()
        for start in clip_starts(n, 16, 5, 1):
            covered.update(range(start, start + 16))
        assert covered == set(range(n))


@pytest.fixture(scope="module")
def known_video(tmp_path_factory):
    folder = tmp_path_factory.mktemp("known")
    path = folder / "cam07" / "2026-01-02" / "known.mp4"
    path.parent.mkdir(parents=True)
    path.write_bytes(encode_mp4(known_frames(30), fps=10))
    return folder


def _only_video(folder):
    videos, rejected = list_videos(SourceConfig(uri=str(folder)))
    assert not rejected
    assert len(videos) == 1
    return videos[0]


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_mp4_clip_boundaries_match_frame_content(known_video, backend):
    decode = DecodeConfig(clip_len=4, stride=3, frame_step=2, resize=(32, 48), grayscale=True, backend=backend)
    clips = list(iter_clips(_only_video(known_video), decode))
    assert [c.start_frame for c in clips] == [0, 3, 6, 9, 12, 15, 18, 21, 23]
    for clip in clips:
        assert clip.frames.shape == (4, 32, 48)
        assert clip.end_frame == clip.start_frame + 6
        decoded = [frame_index_of(f) for f in clip.frames]
        assert decoded == [clip.start_frame + 2 * k for k in range(4)]
        assert clip.start_time_s == pytest.approx(clip.start_frame / 10, abs=1e-3)
        assert clip.end_time_s == pytest.approx((clip.end_frame + 1) / 10, abs=1e-3)


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_color_decode_keeps_channels(known_video, backend):
    decode = DecodeConfig(clip_len=16, stride=16, resize=None, grayscale=False, backend=backend)
    clips = list(iter_clips(_only_video(known_video), decode))
    assert [c.start_frame for c in clips] == [0, 14]
    assert clips[0].frames.shape == (16, 64, 96, 3)
    assert frame_index_of(clips[1].frames[-1]) == 29


def test_batches_group_clips_and_carry_metadata(known_video):
    decode = DecodeConfig(clip_len=4, stride=4, resize=(16, 16), clips_per_batch=3)
    batches = list(iter_clip_batches(_only_video(known_video), decode))
    assert [len(b["clip_index"]) for b in batches] == [3, 3, 2]
    assert np.concatenate([b["clip_index"] for b in batches]).tolist() == list(range(8))
    assert set(batches[0]["camera"]) == {"cam07"}
    assert set(batches[0]["date"]) == {"2026-01-02"}
    assert batches[0]["frames"].dtype == np.uint8


def test_frame_folder_is_one_video_in_name_order(tmp_path):
    folder = tmp_path / "testing" / "frames" / "04"
    folder.mkdir(parents=True)
    frames = known_frames(20, 24, 36)
    for i, frame in enumerate(frames):  # written out of order on purpose
        Image.fromarray(frame).save(folder / f"{i:03d}.tif" if i % 2 else folder / f"{i:03d}.jpg")
    videos, _ = list_videos(SourceConfig(uri=str(tmp_path)), run_date="2026-03-04")
    assert len(videos) == 1 and videos[0].kind == "frames" and len(videos[0].frames) == 20
    assert (videos[0].camera, videos[0].date) == ("default", "2026-03-04")
    decode = DecodeConfig(clip_len=8, stride=8, resize=None)
    clips = list(iter_clips(videos[0], decode))
    assert [c.start_frame for c in clips] == [0, 8, 12]
    for clip in clips:
        assert [frame_index_of(f) for f in clip.frames] == list(range(clip.start_frame, clip.start_frame + 8))


def test_to_gray_weights():
    rgb = np.zeros((1, 2, 2, 3), dtype=np.uint8)
    rgb[..., 1] = 200
    assert to_gray(rgb)[0, 0, 0] == round(0.587 * 200)
    assert level(3) == 37


# Decoder backends and videos split across tasks


@pytest.fixture(scope="module")
def moving_video(tmp_path_factory):
    """90 frames of a bright block moving over a ramp above a strip whose level names the frame,
    a keyframe every 32 frames; with and without a variable frame rate."""
    frames = np.zeros((90, 64, 96), np.uint8)
    for t in range(90):
        frames[t] = np.linspace(20, 200, 96, dtype=np.uint8)[None, :]
        frames[t, 20:36, 6 * t % 80 : 6 * t % 80 + 16] = 250
        frames[t, 48:, :] = 20 + 2 * t  # a strip whose level names the frame
    folder = tmp_path_factory.mktemp("moving")
    rng = np.random.default_rng(0)
    paths = {}
    for name, stamps in (("cfr", None), ("vfr", list(np.cumsum(rng.uniform(0.02, 0.09, 90))))):
        paths[name] = folder / f"{name}.mp4"
        paths[name].write_bytes(encode_mp4(frames, fps=25, timestamps_s=stamps))
    return paths


@pytest.mark.parametrize("name", ["cfr", "vfr"])
@pytest.mark.parametrize("resize, gray", [((32, 48), True), (None, False)])
def test_pyav_reads_what_decord_reads(moving_video, name, resize, gray):
    decord_reader = _reader(str(moving_video[name]), DecodeConfig(resize=resize, grayscale=gray))
    pyav_reader = _reader(str(moving_video[name]), DecodeConfig(resize=resize, grayscale=gray, backend="pyav"))
    assert len(decord_reader) == len(pyav_reader) == 90
    everything = decord_reader.batch(list(range(90))).astype(int)
    for indices in ([0, 1, 2, 3], [40, 41, 42], [5, 6], [89], [33, 70]):  # forward, backward, across keyframes
        got = pyav_reader.batch(indices).astype(int)
        assert got.shape == (len(indices), *everything.shape[1:])
        for index, frame in zip(indices, got):
            # the same frame: the converters round differently (a grey level or two), but the
            # nearest of decord's frames is the one with the same index
            distance = np.abs(everything - frame).mean(axis=tuple(range(1, frame.ndim + 1)))
            assert int(distance.argmin()) == index and distance[index] < 3, (index, distance[index])
        start_a, end_a = decord_reader.times(indices[0], indices[-1])
        start_b, end_b = pyav_reader.times(indices[0], indices[-1])
        assert start_b == pytest.approx(start_a, abs=1e-3)
        if indices[-1] < 89:  # the last frame's duration is a guess in both
            assert end_b == pytest.approx(end_a, abs=1e-3)


def test_pyav_random_access_equals_sequential(moving_video):
    decode = DecodeConfig(resize=(32, 48), backend="pyav")
    sequential = _reader(str(moving_video["cfr"]), decode).batch(list(range(90)))
    reader = _reader(str(moving_video["cfr"]), decode)
    for index in (70, 3, 88, 31, 32, 33, 0, 64):
        np.testing.assert_array_equal(reader.batch([index])[0], sequential[index])


@pytest.mark.parametrize("backend", ["decord", "pyav"])
@pytest.mark.parametrize("parts", [2, 3, 7])
def test_split_parts_cut_every_clip_once_with_the_same_frames(moving_video, backend, parts):
    path = moving_video["cfr"]
    video = VideoRef(str(path), "cfr.mp4", "video", path.stat().st_size, 0.0, "cam", "2026-11-24")
    decode = DecodeConfig(clip_len=8, stride=5, resize=(32, 48), clips_per_batch=3, backend=backend)
    whole = list(iter_clip_batches(video, decode))
    shares = [list(iter_clip_batches(video, decode, part=k, parts=parts)) for k in range(parts)]

    def gathered(batches, column):
        return np.concatenate([b[column] for b in batches]) if batches else np.empty(0)

    indices = [gathered(share, "clip_index").tolist() for share in shares]
    assert sum(indices, []) == gathered(whole, "clip_index").tolist() == list(range(len(clip_starts(90, 8, 5))))
    assert all(len(i) > 0 for i in indices)
    for share in shares:
        assert {int(n) for b in share for n in b["clips_in_video"]} == {sum(map(len, indices))}
    np.testing.assert_array_equal(np.concatenate([gathered(s, "frames") for s in shares]), gathered(whole, "frames"))
    np.testing.assert_array_equal(np.concatenate([gathered(s, "start_time_s") for s in shares]), gathered(whole, "start_time_s"))


def test_split_parts_follow_object_size():
    def video(size, kind="video"):
        return VideoRef("s3://b/v.mp4", "v.mp4", kind, size, 0.0, "cam", "2026-11-24")

    decode = DecodeConfig(split_mb=64)
    assert split_parts(video(10 << 20), decode) == 1
    assert split_parts(video(64 << 20), decode) == 1
    assert split_parts(video((64 << 20) + 1), decode) == 2
    assert split_parts(video(1 << 30), decode) == 16
    assert split_parts(video(1 << 30, "frames"), decode) == 1, "frame folders are not split"
    assert split_parts(video(1 << 30), DecodeConfig(split_mb=None)) == 1
    for clips in (0, 1, 5, 17, 100):
        for parts in (1, 2, 3, 8):
            covered = [i for k in range(parts) for i in part_range(clips, k, parts)]
            assert covered == list(range(clips))


def test_backend_is_part_of_the_decode_signature():
    decord_sig = decode_signature(16, 16, 1, (128, 128), True)
    assert decord_sig == decode_signature(16, 16, 1, (128, 128), True, "decord") == "len16-stride16-step1-128x128-gray"
    assert decode_signature(16, 16, 1, (128, 128), True, "pyav") != decord_sig


def test_readers_are_closed_when_the_video_is_done(known_video):
    """A PyAV reader holds an FFmpeg demuxer and file handle: `open_video` closes it on exit, also
    when decoding stops part-way."""
    from vad.video.readers import open_video

    video = _only_video(known_video)
    decode = DecodeConfig(clip_len=4, resize=(32, 48), backend="pyav")
    with open_video(video, decode) as reader:
        assert reader.container is not None and len(reader) == 30
    assert reader.container is None
    with pytest.raises(RuntimeError, match="stop"):
        with open_video(video, decode) as reader:
            reader.batch([0, 1])
            raise RuntimeError("stop")
    assert reader.container is None
