"""A job never joins a Ray cluster its config does not name, even when one runs on the same host."""

import os
import subprocess
import sys
import time

import pytest
from helpers import ray_head

from vad.testing.s3server import free_port

PROBE = (
    "import sys, json, ray\n"
    "from vad.cluster import ensure_ray\n"
    "ensure_ray(None if sys.argv[1] == 'null' else sys.argv[1], 1)\n"
    "print(json.dumps(ray.cluster_resources()))\n"
)


@pytest.fixture
def stranger():
    """Another user's Ray head on this host, started with `ray start` as they would (so it is the
    host's "latest cluster"), with a resource of its own; yields its address and the resources a job
    naming that address saw once the head was up."""
    port = free_port()
    with ray_head(f"--port={port}", "--num-cpus=1", '--resources={"stranger": 1}', "--include-dashboard=false"):
        address = f"127.0.0.1:{port}"
        deadline, joined = time.monotonic() + 120, {}
        while time.monotonic() < deadline and joined.get("stranger") is None:
            joined = _probe(address)
            if joined.get("stranger") is None:
                time.sleep(0.5)
        yield address, joined


def _probe(address: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    if address:  # `ray start` heads of Ray 2.60 take a token (~/.ray/auth_token); clients say they have one
        env["RAY_AUTH_MODE"] = "token"
    result = subprocess.run([sys.executable, "-c", PROBE, address or "null"], capture_output=True, text=True, timeout=180, env=env)
    if result.returncode != 0:
        return {}
    import json

    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_job_without_an_address_starts_its_own_ray_beside_a_strangers(stranger):
    _, joined = stranger
    assert joined.get("stranger") == 1, joined  # naming the cluster joins it: the check below can tell them apart
    own = _probe(None)
    assert own.get("CPU") == 1 and "stranger" not in own, own
