"""Which Ray a job uses: a private local one unless the config names a cluster; a clear error otherwise."""

import subprocess
import sys


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)


def test_an_unreachable_cluster_is_one_clear_error():
    from vad.testing.s3server import free_port

    result = _run(
        "from vad.cluster import ensure_ray\n"
        f"ensure_ray('127.0.0.1:{free_port()}')\n"
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("vad.cluster.ClusterError: cannot join the Ray cluster at '127.0.0.1:"), result.stderr[-2000:]
    assert "or set it to null to start a local Ray" in last
