"""Results in object storage are read with the same storage settings as the jobs: endpoint and
credentials from a job config or the command line, one clear line when the store cannot be reached."""

import datetime as dt
import json

import pytest
import yaml

from vad.cli import main
from vad.results.ledger import error_row, write_errors
from vad.results.runs import write_run_record
from vad.results.schema import RUNS_SCHEMA
from vad.testing.s3server import free_port

RESULTS = "s3://results/vad"


@pytest.fixture(scope="module")
def results(s3):
    s3.client().create_bucket(Bucket="results")
    storage = s3.storage_config()
    now = dt.datetime.now(dt.timezone.utc)
    row = {name: 0 for name in RUNS_SCHEMA.names} | {
        "schema_version": 3, "run_id": "r1", "run_date": dt.date(2026, 11, 24), "started_at": now, "finished_at": now,
        "source_uri": "s3://archive", "model_name": "conv_ae", "model_version": "1", "failure_rate": 0.0, "wall_s": 1.0,
        "clips_per_s": 0.0, "videos": 3,
    }
    write_run_record(RESULTS, row, storage)
    write_errors(RESULTS, "2026-11-24", "r1", [error_row("s3://archive/x.mp4", "open", ValueError("bad"), permanent=True)], storage)
    return storage


@pytest.fixture
def no_endpoint_env(monkeypatch):
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)


def test_query_s3_results_with_an_endpoint_or_a_job_config(results, s3, no_endpoint_env, tmp_path, capsys):
    assert main(["query", "SELECT run_id, videos FROM runs", "--results", RESULTS, "--endpoint-url", s3.endpoint_url, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"run_id": "r1", "videos": 3}]
    config = tmp_path / "score.yaml"
    storage = {"endpoint_url": s3.endpoint_url, "access_key_id": results.access_key_id.get_secret_value(),
               "secret_access_key": results.secret_access_key.get_secret_value()}
    config.write_text(yaml.safe_dump({"source": {"uri": "s3://archive"}, "storage": storage}))
    assert main(["query", "SELECT stage FROM errors", "--results", RESULTS, "--config", str(config), "--format", "csv"]) == 0
    assert capsys.readouterr().out.split() == ["stage", "open"]


def test_an_unreachable_store_is_one_clear_line(results, no_endpoint_env, tmp_path, capsys):
    closed = f"http://127.0.0.1:{free_port()}"
    config = tmp_path / "score.yaml"
    config.write_text(yaml.safe_dump({"storage": {"endpoint_url": closed, "retries": 0, "connect_timeout_s": 2}}))
    for command in (["query", "SELECT * FROM runs"], ["evaluate", "--labels", str(_labels(tmp_path))]):
        assert main([*command, "--results", RESULTS, "--config", str(config)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"vad {command[0]}: error: cannot read {RESULTS}: "), err
        assert "--endpoint-url" in err[0]


def _labels(tmp_path):
    path = tmp_path / "labels.json"
    path.write_text(json.dumps({"x.mp4": [0, 1]}))
    return path


def test_the_embedded_server_refuses_anonymous_writes_like_s3(s3):
    import urllib.error
    import urllib.request

    s3.client().create_bucket(Bucket="guarded")
    request = urllib.request.Request(f"{s3.endpoint_url}/guarded/anonymous.parquet", data=b"PAR1", method="PUT")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 403 and b"AccessDenied" in refused.value.read()
    s3.client().put_object(Bucket="guarded", Key="signed.parquet", Body=b"PAR1")  # signed: accepted
    assert [o["Key"] for o in s3.client().list_objects_v2(Bucket="guarded")["Contents"]] == ["signed.parquet"]


def test_a_job_without_credentials_stops_before_writing(s3, tmp_path, monkeypatch):
    """No keys in the config and none in the AWS chain: the job says so before any work, instead of
    sending anonymous writes."""
    from vad.config import ScoreJobConfig
    from vad.scoring.job import plan_run

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-role lookup off this machine
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    cfg = ScoreJobConfig.model_validate({
        "source": {"uri": "s3://archive"}, "output": {"uri": "s3://results/anonymous"}, "scorer": {"checkpoint": "s3://models/m.pt"},
        "storage": {"endpoint_url": s3.endpoint_url}, "mlflow": {"enabled": False}, "work_dir": str(tmp_path),
    })
    with pytest.raises(ValueError, match="no credentials to write to s3://results/anonymous"):
        plan_run(cfg)


def test_query_skips_and_names_an_unreadable_file(results, s3, no_endpoint_env, capsys, caplog):
    """A file that is not Parquet (what anonymous writes once left behind) is named and left out;
    the rest of the results stay queryable."""
    s3.client().put_object(Bucket="results", Key="vad/runs/date=2026-11-25/run-mangled.parquet", Body=b"1043\r\nPAR1\x00\x01")
    assert main(["query", "SELECT run_id FROM runs", "--results", RESULTS, "--endpoint-url", s3.endpoint_url, "--format", "csv"]) == 0
    assert capsys.readouterr().out.split() == ["run_id", "r1"]
    assert any("run-mangled.parquet" in r.getMessage() and "skipped unreadable" in r.getMessage() for r in caplog.records)
    s3.client().delete_object(Bucket="results", Key="vad/runs/date=2026-11-25/run-mangled.parquet")
