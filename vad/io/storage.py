"""One way to reach local folders and S3-compatible object stores (AWS, MinIO).

Everything goes through `pyarrow.fs`, which is picklable, so Ray tasks rebuild
nothing and the same code path serves listing, reading and Parquet writing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from vad.config import StorageConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Location:
    """A parsed URI: the filesystem to use and the path inside it (no scheme)."""

    scheme: str  # "s3" or "file"
    path: str  # "bucket/prefix" for s3, absolute path for files

    @property
    def uri(self) -> str:
        return f"s3://{self.path}" if self.scheme == "s3" else self.path

    def join(self, *parts: str) -> "Location":
        path = "/".join([self.path.rstrip("/"), *[p.strip("/") for p in parts if p]])
        return Location(self.scheme, path)


def parse_uri(uri: str) -> Location:
    if uri.startswith("s3://"):
        path = uri[len("s3://") :].strip("/")
        if not path:
            raise ValueError(f"{uri!r}: an s3 uri needs a bucket")
        return Location("s3", path)
    if "://" in uri and not uri.startswith("file://"):
        raise ValueError(f"{uri!r}: unsupported scheme (use s3:// or a local path)")
    local = uri[len("file://") :] if uri.startswith("file://") else uri
    return Location("file", str(Path(local).expanduser().resolve()))


def filesystem(location: Location, storage: StorageConfig | None = None) -> pafs.FileSystem:
    if location.scheme == "file":
        return pafs.LocalFileSystem()
    return s3_filesystem(storage or StorageConfig())


def s3_filesystem(storage: StorageConfig) -> pafs.S3FileSystem:
    kwargs: dict = {
        "region": storage.region,
        "connect_timeout": storage.connect_timeout_s,
        "request_timeout": storage.request_timeout_s,
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=storage.retries + 1),
    }
    endpoint = storage.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        kwargs["endpoint_override"] = host.rstrip("/") if host else endpoint
        kwargs["scheme"] = scheme if host else "https"
    if storage.access_key_id is not None and storage.secret_access_key is not None:
        kwargs["access_key"] = storage.access_key_id.get_secret_value()
        kwargs["secret_key"] = storage.secret_access_key.get_secret_value()
    return pafs.S3FileSystem(**kwargs)


def require_credentials(uri: str, storage: StorageConfig | None = None) -> None:
    """Before a job writes to `uri`: an S3 location needs credentials, from the storage config or the
    AWS chain (environment, shared files, instance role). Without any, the S3 client would send
    anonymous writes, which real S3 refuses and some servers store mangled."""
    if parse_uri(uri).scheme != "s3" or (storage is not None and storage.access_key_id is not None):
        return
    import botocore.session

    if botocore.session.get_session().get_credentials() is None:
        raise ValueError(
            f"no credentials to write to {uri}: set storage.access_key_id and storage.secret_access_key, "
            "or give them to the AWS chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, an instance role)"
        )


def open_uri(uri: str, storage: StorageConfig | None = None) -> tuple[pafs.FileSystem, str]:
    location = parse_uri(uri)
    return filesystem(location, storage), location.path


def with_retries(action, attempts: int, what: str, base_s: float = 0.2, cap_s: float = 10.0):
    """Call `action()`, retrying I/O errors with exponential backoff and jitter. The S3 client
    already retries each request; this covers what it cannot, e.g. a connection that drops
    while an object's body is streaming."""
    for attempt in range(attempts):
        try:
            return action()
        except FileNotFoundError:
            raise
        except OSError as exc:
            if attempt == attempts - 1:
                raise
            delay = min(cap_s, base_s * 2**attempt) * (0.5 + random.random())
            log.warning("%s failed (%s); retry %d/%d in %.1f s", what, exc, attempt + 1, attempts - 1, delay)
            _pause(delay)


def _pause(seconds: float) -> None:
    """The backoff between retries (its own name, so a test can take the time out of it)."""
    time.sleep(seconds)


def read_path(fs: pafs.FileSystem, path: str, storage: StorageConfig | None = None) -> bytes:
    """A whole object's bytes, with whole-read retries (see `with_retries`)."""
    def read() -> bytes:
        with fs.open_input_stream(path) as stream:
            return stream.read()

    return with_retries(read, whole_read_attempts(storage), f"reading {path}")


def whole_read_attempts(storage: StorageConfig | None) -> int:
    """Whole-object attempts on top of the client's per-request retries (at most 3)."""
    return min(3, (storage or StorageConfig()).retries + 1)


def read_bytes(uri: str, storage: StorageConfig | None = None) -> bytes:
    fs, path = open_uri(uri, storage)
    return read_path(fs, path, storage)


@contextlib.contextmanager
def open_atomic(fs: pafs.FileSystem, path: str):
    """An output stream whose file readers see only once it is complete: a local file is written
    under a temporary name and renamed into place; an S3 object only becomes visible when its
    (multipart) upload completes. Nothing is left behind when the body raises; a temporary file of
    the same target left by a writer that was killed (SIGKILL skips its cleanup) is removed once this
    one is in place."""
    if not isinstance(fs, pafs.LocalFileSystem):
        with fs.open_output_stream(path) as out:
            yield out
        return
    parent, name = path.rsplit("/", 1)
    fs.create_dir(parent, recursive=True)
    tmp = f"{parent}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with fs.open_output_stream(tmp) as out:
            yield out
        os.replace(tmp, path)
        for stale in Path(parent).glob(f".{name}.*.tmp"):  # one writer per target: these belong to dead ones
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_bytes(uri: str, data: bytes, storage: StorageConfig | None = None) -> None:
    """Write a whole object atomically (see `open_atomic`)."""
    fs, path = open_uri(uri, storage)
    with open_atomic(fs, path) as out:
        out.write(data)


def write_parquet_atomic(fs: pafs.FileSystem, path: str, table: pa.Table) -> None:
    """One Parquet file (zstd), written atomically (see `open_atomic`)."""
    with open_atomic(fs, path) as out:
        pq.write_table(table, out, compression="zstd")
