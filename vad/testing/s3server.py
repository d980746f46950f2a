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


_ACCESS_DENIED = (
    b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code>"
    b"<Message>Anonymous writes are refused; sign the request</Message></Error>"
)


def refuse_anonymous_writes(app):
    """WSGI middleware: PUT, POST and DELETE without a signature (an Authorization header or a
    presigned URL) get 403 AccessDenied, as real S3 answers them."""

    def guarded(environ, start_response):
        signed = environ.get("HTTP_AUTHORIZATION") or "X-Amz-Credential" in environ.get("QUERY_STRING", "")
        if environ.get("REQUEST_METHOD") in ("PUT", "POST", "DELETE") and not signed:
            start_response("403 Forbidden", [("Content-Type", "application/xml"), ("Content-Length", str(len(_ACCESS_DENIED)))])
            return [_ACCESS_DENIED]
        return app(environ, start_response)

    return guarded


def start_local_s3(port: int | None = None) -> LocalS3:
    try:
        from moto.moto_server.threaded_moto_server import ThreadedMotoServer
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server
    except ImportError as exc:
        raise RuntimeError("the embedded S3 server needs moto: pip install 'vad[demo]'") from exc

    class GuardedMotoServer(ThreadedMotoServer):
        def _server_entry(self) -> None:  # moto's, with the anonymous-write guard around the app
            app = refuse_anonymous_writes(DomainDispatcherApplication(create_backend_app))
            self._server = make_server(self._ip_address, self._port, app, True, request_handler=MotoRequestHandler)
            self._server_ready_event.set()
            self._server.serve_forever()

    # moto accepts any credentials; these keep boto3 from searching the host's AWS config.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", DEMO_ACCESS_KEY)
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", DEMO_SECRET_KEY)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = port or free_port()
    server = GuardedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
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
