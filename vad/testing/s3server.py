"""An S3-speaking server on loopback for the embedded demo and the tests (moto in server mode).

It is reached over HTTP by boto3 and pyarrow exactly as AWS or MinIO would be.
Users point `storage.endpoint_url` at MinIO or AWS instead (see infra/).
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass

DEMO_ACCESS_KEY = "vad-demo-key"
DEMO_SECRET_KEY = "vad-demo-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LocalS3:
    endpoint_url: str
    server: object

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=DEMO_ACCESS_KEY,
            aws_secret_access_key=DEMO_SECRET_KEY,
        )

    def storage_config(self):
        from vad.config import StorageConfig

        return StorageConfig(
            endpoint_url=self.endpoint_url, access_key_id=DEMO_ACCESS_KEY, secret_access_key=DEMO_SECRET_KEY
        )

    def stop(self) -> None:
        self.server.stop()


def start_local_s3(port: int | None = None) -> LocalS3:
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        raise RuntimeError("the embedded S3 server needs moto: pip install 'vad[demo]'") from exc
    # moto accepts any credentials; these keep boto3 from searching the host's AWS config.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", DEMO_ACCESS_KEY)
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", DEMO_SECRET_KEY)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = port or free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return LocalS3(f"http://127.0.0.1:{port}", server)


def upload_folder(s3: LocalS3, folder: str, bucket: str, prefix: str = "") -> int:
    """Upload every file under `folder` to s3://bucket/prefix/...; returns the count."""
    client = s3.client()
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        client.create_bucket(Bucket=bucket)
    count = 0
    for dirpath, _, names in os.walk(folder):
        for name in sorted(names):
            path = os.path.join(dirpath, name)
            key = "/".join(p for p in (prefix.strip("/"), os.path.relpath(path, folder).replace(os.sep, "/")) if p)
            client.upload_file(path, bucket, key)
            count += 1
    return count
