import numpy as np
import pytest
from PIL import Image

from helpers import frame_index_of, known_frames, level
from vad.config import DecodeConfig, SourceConfig
from vad.decode import clip_starts, iter_clip_batches, iter_clips, to_gray
from vad.sources import list_videos
from vad.synthetic import encode_mp4


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


def test_mp4_clip_boundaries_match_frame_content(known_video):
    decode = DecodeConfig(clip_len=4, stride=3, frame_step=2, resize=(32, 48), grayscale=True)
    clips = list(iter_clips(_only_video(known_video), decode))
    assert [c.start_frame for c in clips] == [0, 3, 6, 9, 12, 15, 18, 21, 23]
    for clip in clips:
        assert clip.frames.shape == (4, 32, 48)
        assert clip.end_frame == clip.start_frame + 6
        decoded = [frame_index_of(f) for f in clip.frames]
        assert decoded == [clip.start_frame + 2 * k for k in range(4)]
        assert clip.start_time_s == pytest.approx(clip.start_frame / 10, abs=1e-3)
        assert clip.end_time_s == pytest.approx((clip.end_frame + 1) / 10, abs=1e-3)


def test_color_decode_keeps_channels(known_video):
    decode = DecodeConfig(clip_len=16, stride=16, resize=None, grayscale=False)
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
