"""The cluster path as a user takes it: a real Ray head started from the project's environment with
`ray start`, and `jobs.train` and `jobs.score` submitted through its job server (the API KubeRay's
RayJobs and `ray job submit` use), joining it with `ray.address: auto`. And the other side: a job whose
config names no cluster never joins that head, although it is the host's latest cluster; run from a
shell, it shows the person a progress bar, warnings that matter and the summary, Ray's own output in its
log file (shown with -v)."""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.dataset as pads
import pytest
import yaml
from helpers import DECODE, job_config, ray_head, write_yaml

from vad.results.schema import PARTITION_SCHEMA
from vad.testing.s3server import free_port

VENV_BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]


# The job API is driven from a separate client process (with RAY_AUTH_MODE=token, as a user's shell),
# so this process's Ray state (token mode, clients) stays as the other tests left it.
CLIENT = """
import sys, time
from ray.job_submission import JobStatus, JobSubmissionClient
url, entrypoint = sys.argv[1], sys.argv[2]
deadline = time.monotonic() + 180
while True:  # the job server answers before the head's agent takes jobs
    try:
        client = JobSubmissionClient(url)
        job = client.submit_job(entrypoint=entrypoint)
        break
    except Exception:
        if time.monotonic() > deadline:
            raise
        time.sleep(2)
deadline = time.monotonic() + 420
while client.get_job_status(job) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
    if time.monotonic() > deadline:
        sys.exit("timed out: " + client.get_job_logs(job)[-3000:])
    time.sleep(0.5)
print(client.get_job_logs(job))
sys.exit(0 if client.get_job_status(job) == JobStatus.SUCCEEDED else 1)
"""


def _dashboard_answers(url: str, process, timeout_s: float) -> bool:
    """True once the head's job server answers; False when the head exits or time runs out."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=5):
                return True
        except urllib.error.HTTPError:  # it answers (401 without the token)
            return True
        except OSError:
            time.sleep(1)
    return False


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A 2-CPU head with its dashboard (the job server) and a resource of its own ("head"), started the way
    the README says: from the project's environment (its bin/ first on PATH, as after `source
    .venv/bin/activate`), so a job's `python` is the one with vad installed; yields the job server's URL and
    the head's address. A head that does not come up
    (a port taken between choosing and binding it) is started again on fresh ports, twice at most."""
    logs = tmp_path_factory.mktemp("ray-head")
    for attempt in range(3):
        port, dashboard = free_port(), free_port()
        temp = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # short: Ray's socket paths live under it
        # Every port its own: the tests' local Ray already holds the defaults (e.g. its dashboard agent's 52365).
        agents = [f"--{name}={free_port()}" for name in (
            "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port",
            "node-manager-port", "object-manager-port", "ray-client-server-port",
        )]
        args = (f"--port={port}", "--num-cpus=2", '--resources={"head": 1}', "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                f"--dashboard-port={dashboard}", f"--temp-dir={temp}", *agents)
        url = f"http://127.0.0.1:{dashboard}"
        with ray_head(*args, path_first=str(VENV_BIN), log=logs / f"head-{attempt}.log") as process:
            if _dashboard_answers(url, process, 120):
                yield {"url": url, "address": f"127.0.0.1:{port}"}
                return
    pytest.fail("the Ray head did not come up three times; its output:\n" + (logs / "head-2.log").read_text()[-3000:])


def _client_env(*, token: bool) -> dict:
    """This environment without RAY_ADDRESS; with `token`, RAY_AUTH_MODE=token: `ray start` heads of Ray 2.60
    take a token (~/.ray/auth_token) and their clients say they have one."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return {**env, "RAY_AUTH_MODE": "token"} if token else env


def _run(url: str, args: list[str]) -> str:
    """Submit `python -m <args>` and wait; the head's token (~/.ray/auth_token) reaches the client
    through RAY_AUTH_MODE=token."""
    result = subprocess.run(
        [sys.executable, "-c", CLIENT, url, " ".join(["python", "-m", *args])], capture_output=True, text=True, timeout=720, env=_client_env(token=True),
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result.stdout


def test_train_then_score_through_the_job_api(head, s3, archive, tmp_path, capsys, mlflow_database):
    """Training without held-out videos (val_fraction 0): no val/loss, so the model is registered but the
    champion alias does not move; the job says why and how to promote; `vad promote` moves it, and the
    nightly job then scores with the champion."""
    import mlflow

    from vad.cli import main

    work, tracking = tmp_path / "work", f"sqlite:///{mlflow_database(tmp_path / 'mlflow.db')}"
    storage = {k: (v.get_secret_value() if hasattr(v, "get_secret_value") else v) for k, v in s3.storage_config().model_dump().items()}
    decode = DECODE.model_dump(mode="json")
    train = {
        "source": {"uri": archive["uri"]}, "storage": storage, "decode": {**decode, "stride": 4},
        "output": {"checkpoint": str(tmp_path / "conv_ae.pt"), "version": "cluster-1"},
        "model": {"name": "conv_ae", "hparams": {"widths": [16, 8, 8]}},
        "train": {"epochs": 2, "batch_size": 8, "key_regex": "/train_", "val_fraction": 0.0, "device": "cpu"},
        "ray": {"address": "auto"}, "distributed": {"num_workers": 1, "cpus_per_worker": 1, "storage_path": str(tmp_path / "ray-train")},
        "mlflow": {"tracking_uri": tracking, "experiment": "cluster-train"}, "work_dir": str(work),
    }
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(train))
    logs = _run(head["url"], ["jobs.train", "--config", str(tmp_path / "train.yaml")])
    assert '"promoted": false' in logs and "val/loss is undefined" in logs, logs[-3000:]
    job_log = "".join(p.read_text() for p in (work / "logs").glob("train-*.log"))
    assert "vad promote vad-conv-ae 1" in job_log, job_log[-3000:]
    client = mlflow.MlflowClient(tracking)
    [run] = client.search_runs([client.get_experiment_by_name("cluster-train").experiment_id])
    assert (run.data.params["split.train_videos"], run.data.params["split.val_videos"]) == ("4", "0")
    with pytest.raises(Exception, match="champion"):
        client.get_model_version_by_alias("vad-conv-ae", "champion")  # not promoted: no alias yet
    assert not (tmp_path / "conv_ae.pt").exists() and (tmp_path / "conv_ae.v1.pt").is_file()  # written beside, by version
    assert main(["promote", "vad-conv-ae", "1", "--tracking-uri", tracking]) == 0
    # (Ray may print its own lines into this process's stdout meanwhile.)
    assert "models:/vad-conv-ae@champion -> version 1" in capsys.readouterr().out.splitlines()
    assert str(client.get_model_version_by_alias("vad-conv-ae", "champion").version) == "1"
    assert main(["promote", "vad-conv-ae", "999", "--tracking-uri", tracking]) == 2

    score = {
        "source": {"uri": f"{archive['uri']}/cam01"}, "storage": storage, "decode": decode,
        "output": {"uri": str(tmp_path / "results")},
        "scorer": {"name": "conv_ae", "checkpoint": "models:/vad-conv-ae@champion", "device": "cpu", "batch_size": 4},
        "ray": {"address": "auto"}, "mlflow": {"tracking_uri": tracking, "experiment": "cluster-score"}, "work_dir": str(work),
    }
    (tmp_path / "score.yaml").write_text(yaml.safe_dump(score))
    logs = _run(head["url"], ["jobs.score", "--config", str(tmp_path / "score.yaml"), "--date", "2026-11-24"])
    assert '"clips":' in logs
    table = pads.dataset(str(tmp_path / "results" / "scores"), partitioning=pads.partitioning(PARTITION_SCHEMA, flavor="hive")).to_table()
    # rows name the registered model and version that scored them
    assert table.num_rows > 0 and set(table["model_name"].to_pylist()) == {"vad-conv-ae"} and set(table["model_version"].to_pylist()) == {"1"}
    [run] = client.search_runs([client.get_experiment_by_name("cluster-score").experiment_id])
    assert run.data.metrics["score/clips"] == table.num_rows


PROBE = (
    "import sys, json, ray\n"
    "from vad.cluster import ensure_ray\n"
    "ensure_ray(sys.argv[1], 1)\n"
    "print(json.dumps(ray.cluster_resources()))\n"
)


def _probe(address: str) -> dict:
    """The resources a job sees that names `address` (the job naming none is `vad score` itself, below)."""
    result = subprocess.run([sys.executable, "-c", PROBE, address], capture_output=True, text=True, timeout=180, env=_client_env(token=True))
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


RAY_NOISE = ("core_worker", "Execution plan", "logging_progress", "(TrainController", "(SplitCoordinator", "Traceback", "raylet")


def _score(config: Path, *flags: str) -> subprocess.CompletedProcess:
    """`vad score` as a person runs it from a shell (this environment: no cluster named, no token)."""
    return subprocess.run(
        [sys.executable, "-m", "vad", *flags, "score", "--config", str(config), "--date", "2026-11-24"],
        capture_output=True, text=True, timeout=600, cwd=REPO, env=_client_env(token=False),
    )


def test_a_job_naming_no_cluster_starts_its_own_ray_and_shows_progress_and_the_summary(head, s3, archive, checkpoint, tmp_path,
                                                                                         mlflow_database):
    """The head above is another user's cluster on this host, started with `ray start` (so it is the host's
    latest cluster): a job naming it joins it; `vad score` with a config naming none starts its own Ray beside
    it. On the console: the progress bar and the summary, none of Ray's lines; the log holds the rest."""
    joined = _probe(head["address"])
    assert joined.get("head") == 1, joined  # naming the cluster joins it: the check below can tell them apart
    cfg = job_config(s3, f"{archive['uri']}/cam01", checkpoint["uri"], tmp_path)
    mlflow_database(Path(cfg.work_dir) / "mlflow.db")
    config = write_yaml(cfg, tmp_path / "score.yaml")
    quiet = _score(config)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert json.loads(quiet.stdout)["clips"] > 0
    lines = quiet.stderr.strip().splitlines()
    assert len(lines) <= 4, lines
    assert not [line for line in lines if any(noise in line for noise in RAY_NOISE)], lines
    assert any(line.startswith("scoring [") and "videos" in line and "clips/s" in line for line in lines), lines
    log = Path(lines[-1].removeprefix("vad score: log in "))
    assert lines[-1].startswith("vad score: log in ") and log.parent == Path(cfg.work_dir).resolve() / "logs"
    text = log.read_text()
    assert "videos under" in text and "vad.scoring.job" in text  # the library's own INFO lines
    # its own Ray, of the CPUs its config asks for, not the head (whose resource "head" it would list)
    [own] = [line for line in text.splitlines() if "started a local Ray (" in line]
    assert "'CPU': 2.0" in own and "'head'" not in own, own

    loud = _score(config, "-v")  # the same run again (nothing new to score), everything on the console
    assert loud.returncode == 0 and "INFO vad.scoring.job: run " in loud.stderr
