"""Listing and reading through the real S3-speaking server over HTTP (boto3 + pyarrow)."""

import numpy as np
import pytest
from helpers import frame_index_of, known_frames

from vad.config import DecodeConfig, SourceConfig
from vad.io.sources import list_videos, scan_source
from vad.io.storage import read_bytes
from vad.testing.synthetic import encode_mp4
from vad.video.clips import iter_clips


@pytest.fixture(scope="module")
def bucket(s3):
    client = s3.client()
    client.create_bucket(Bucket="src")
    video = encode_mp4(known_frames(34), fps=20)
    client.put_object(Bucket="src", Key="site/cam-3/2026-10-31/a.mp4", Body=video)
    client.put_object(Bucket="src", Key="site/cam-4/20261101/b.mkv", Body=b"not really a video")
    client.put_object(Bucket="src", Key="site/readme.txt", Body=b"hello")
    for i in range(12):
        png = _png(known_frames(1, 24, 32)[0] * 0 + np.uint8(16 + 7 * i))
        client.put_object(Bucket="src", Key=f"ped/Test001/{i:03d}.png", Body=png)
    return {"video": video}


def _png(frame):
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return buffer.getvalue()


def test_listing_over_http(s3, bucket):
    videos, rejected = list_videos(SourceConfig(uri="s3://src/site"), s3.storage_config(), run_date="2026-01-01")
    assert [(v.uri, v.camera, v.date, v.kind) for v in videos] == [
        ("s3://src/site/cam-3/2026-10-31/a.mp4", "cam-3", "2026-10-31", "video"),
        ("s3://src/site/cam-4/20261101/b.mkv", "cam-4", "2026-11-01", "video"),
    ]
    assert videos[0].size == len(bucket["video"]) and videos[0].mtime > 0
    assert rejected == []
    assert [r.uri for r in scan_source(SourceConfig(uri="s3://src/site"), s3.storage_config()).skipped] == ["s3://src/site/readme.txt"]
    assert read_bytes(videos[0].uri, s3.storage_config()) == bucket["video"]


@pytest.mark.parametrize("in_memory_mb", [256, 0])  # decode from memory, or spooled to a temp file
def test_decoding_from_s3(s3, bucket, in_memory_mb):
    videos, _ = list_videos(SourceConfig(uri="s3://src/site/cam-3"), s3.storage_config())
    decode = DecodeConfig(clip_len=16, stride=16, resize=(32, 32), max_in_memory_mb=in_memory_mb)
    clips = list(iter_clips(videos[0], decode, s3.storage_config()))
    assert [c.start_frame for c in clips] == [0, 16, 18]
    assert [frame_index_of(f) for f in clips[-1].frames] == list(range(18, 34))


def test_frame_folder_on_s3(s3, bucket):
    videos, _ = list_videos(SourceConfig(uri="s3://src/ped"), s3.storage_config())
    assert len(videos) == 1 and videos[0].kind == "frames" and videos[0].key == "Test001"
    clips = list(iter_clips(videos[0], DecodeConfig(clip_len=5, stride=5, resize=None), s3.storage_config()))
    assert [[frame_index_of(f) for f in c.frames] for c in clips] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [7, 8, 9, 10, 11]]


def test_unreachable_endpoint_raises(s3, bucket):
    from vad.config import StorageConfig

    bad = StorageConfig(endpoint_url="http://127.0.0.1:9", retries=0, connect_timeout_s=1)
    with pytest.raises(OSError):
        list_videos(SourceConfig(uri="s3://src/site"), bad)
