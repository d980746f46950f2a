"""Bad input and a misbehaving object store, made on purpose: for the robustness tests and
`bench/fault_soak.py`.

- `bad_objects(kind, ...)`: the files a messy archive holds (zero bytes, truncated or corrupt
  video, non-video objects (skipped, not failed), videos shorter than a clip, variable frame rate, odd sizes,
  frame folders with a broken frame), each with what the job is expected to do with it.
- `FaultyS3Proxy`: an HTTP proxy in front of a real S3 endpoint that fails (503 SlowDown),
  drops or delays a chosen share of requests, to check retries with backoff.
"""

from __future__ import annotations

import http.client
import io
import random
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from vad.testing.synthetic import encode_mp4, render_scene

# kind -> what the job must do: "error" (a row in the errors table), "scored" (every clip written) or
# "skipped" (not video: counted as skipped, never a failure)
FAULT_KINDS = {
    "zero_byte": "error",
    "truncated": "error",
    "garbage": "error",
    "not_video": "skipped",
    "too_short": "error",
    "bad_frame": "error",
    "vfr": "scored",
    "odd_size": "scored",
}


@dataclass
class BadObject:
    name: str  # file name (a folder name for frame folders)
    files: dict[str, bytes]  # relative path under the video's folder -> content
    kind: str
    expect: str  # "error" | "scored" | "skipped"
    frames: int = 0  # decodable frames, for "scored"
    timestamps_s: list[float] = field(default_factory=list)


def bad_object(kind: str, rng: np.random.Generator, *, clip_len: int, frames: int = 40, name: str = "clip") -> BadObject:
    """One object (or frame folder) of the given fault kind, from a rendered synthetic scene."""
    scene = render_scene(int(rng.integers(1 << 30)), frames, height=64, width=96)
    good = encode_mp4(scene.frames)
    expect = FAULT_KINDS[kind]
    if kind == "zero_byte":
        return BadObject(f"{name}.mp4", {f"{name}.mp4": b""}, kind, expect)
    if kind == "truncated":
        cut = int(len(good) * rng.uniform(0.1, 0.9))
        return BadObject(f"{name}.mp4", {f"{name}.mp4": good[:cut]}, kind, expect)
    if kind == "garbage":
        return BadObject(f"{name}.mp4", {f"{name}.mp4": rng.bytes(int(rng.integers(1, 20000)))}, kind, expect)
    if kind == "not_video":
        return BadObject(f"{name}.txt", {f"{name}.txt": b"camera notes, not footage\n"}, kind, expect)
    if kind == "too_short":
        short = encode_mp4(scene.frames[: max(1, clip_len - 3)])
        return BadObject(f"{name}.mp4", {f"{name}.mp4": short}, kind, expect)
    if kind == "bad_frame":
        from PIL import Image

        files = {}
        broken = frames - 1 - int(rng.integers(0, clip_len // 2))  # in the last clip: fails part-way
        for i, frame in enumerate(scene.frames):
            out = io.BytesIO()
            Image.fromarray(frame).save(out, format="PNG")
            files[f"{name}/{i:04d}.png"] = out.getvalue() if i != broken else b"\x89PNG\r\n\x1a\n broken"
        return BadObject(name, files, kind, expect)
    if kind == "vfr":
        gaps = rng.choice([1 / 30, 1 / 15, 1 / 5], size=frames)
        stamps = np.concatenate([[0.0], np.cumsum(gaps[:-1])]).round(3).tolist()
        return BadObject(f"{name}.mp4", {f"{name}.mp4": encode_mp4(scene.frames, timestamps_s=stamps)}, kind, expect, frames, stamps)
    if kind == "odd_size":
        odd = render_scene(int(rng.integers(1 << 30)), frames, height=58, width=202).frames
        return BadObject(f"{name}.mp4", {f"{name}.mp4": encode_mp4(odd)}, kind, expect, frames)
    raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")


_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


class FaultyS3Proxy:
    """Forwards HTTP to `upstream` (e.g. the local moto server) and injects faults.

    `fail_rate`: share of requests answered 503 SlowDown (retryable); `drop_rate`: share whose
    connection is closed without an answer; `delay_rate`/`delay_s`: share held back first;
    `fail_paths`: substrings of paths that always get 503 (a persistently failing object; may be set
    while the proxy runs, e.g. to refuse an object after a job planned with it).
    Counts of what was injected are in `stats`; `refused[p]` counts the requests refused by `fail_paths` entry `p`."""

    def __init__(self, upstream: str, *, fail_rate: float = 0.0, drop_rate: float = 0.0, delay_rate: float = 0.0,
                 delay_s: float = 0.5, fail_paths: tuple[str, ...] = (), seed: int = 0):
        scheme, _, hostport = upstream.partition("://")
        if scheme != "http":
            raise ValueError("FaultyS3Proxy forwards to an http:// upstream")
        self.upstream = hostport.rstrip("/")
        self.fail_rate, self.drop_rate, self.delay_rate, self.delay_s = fail_rate, drop_rate, delay_rate, delay_s
        self.fail_paths = fail_paths
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self.stats = {"requests": 0, "failed": 0, "dropped": 0, "delayed": 0}
        self.refused: dict[str, int] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "FaultyS3Proxy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _decide(self, path: str) -> str:
        with self._lock:
            self.stats["requests"] += 1
            hit = next((p for p in self.fail_paths if p in path), None)
            if hit is not None:
                self.stats["failed"] += 1
                self.refused[hit] = self.refused.get(hit, 0) + 1
                return "fail"
            draw = self._random.random()
            for action, rate in (("fail", self.fail_rate), ("drop", self.drop_rate), ("delay", self.delay_rate)):
                if draw < rate:
                    self.stats[{"fail": "failed", "drop": "dropped", "delay": "delayed"}[action]] += 1
                    return action
                draw -= rate
            return "pass"

    def _handler(self):
        return type("Handler", (_ProxyHandler,), {"proxy": self})


class _ProxyHandler(BaseHTTPRequestHandler):
    """Forwards each request to `proxy.upstream`, or fails, drops or delays it as the proxy decides."""

    proxy: "FaultyS3Proxy"

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _slow_down(self) -> None:
        """The injected failure: S3's 503 SlowDown, which clients retry."""
        payload = b"<?xml version='1.0'?><Error><Code>SlowDown</Code><Message>injected</Message></Error>"
        self.send_response(503)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _forward(self) -> None:
        body = self._body()
        action = self.proxy._decide(self.path)
        if action == "drop":
            self.close_connection = True
            self.connection.close()
            return
        if action == "fail":
            self._slow_down()
            return
        if action == "delay":
            threading.Event().wait(self.proxy.delay_s)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            headers["Content-Length"] = str(len(body))
        upstream = http.client.HTTPConnection(self.proxy.upstream, timeout=60)
        try:
            upstream.request(self.command, self.path, body=body or None, headers=headers)
            response = upstream.getresponse()
            payload = response.read()
            self.send_response(response.status, response.reason)
            for key, value in response.getheaders():
                if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                    self.send_header(key, value)
            length = response.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(payload))
            self.send_header("Content-Length", length)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
        finally:
            upstream.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward
