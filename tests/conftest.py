import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
# Ray Train's controller looks at its workers every 2 s by default, so a run notices each report,
# failure and its own end up to 2 s late; the tests' runs are seconds long. Ray Train passes this from
# the driver's environment to its controller (and a test Ray head inherits it).
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
# ... and starts a preemption watcher actor per run, for cloud nodes taken back; none here.
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
# Ray kills a worker process idle for 1 s (beyond one per CPU), and the next job starts a new one and
# imports Ray Data, pyarrow and vad in it again; the tests run jobs back to back, so idle workers are
# kept 30 s and reused (a small scoring job: ~10 s -> ~7.5 s). Read by each Ray the tests start.
os.environ.setdefault("RAY_idle_worker_killing_time_threshold_ms", "30000")
sys.path.insert(0, os.path.dirname(__file__))

# The fast tier (`pytest -m "not slow"`) is tests/unit; integration tests start Ray, an S3 server and
# train models, and real-data tests train on UCSD Ped2.
SLOW_FOLDERS = ("integration", "realdata")


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if Path(item.fspath).relative_to(here).parts[0] in SLOW_FOLDERS:
            item.add_marker(pytest.mark.slow)
    # VAD_TEST_ORDER=reverse runs the tests backwards, to show that none depends on another's order.
    if os.environ.get("VAD_TEST_ORDER") == "reverse":
        items.reverse()


@pytest.fixture(scope="session")
def mlflow_database(tmp_path_factory):
    """`mlflow_database(path)` puts an empty MLflow database at `path` unless one is there: a copy of one that
    MLflow created and migrated once per test run. MLflow brings a new sqlite file to its schema by running
    its ~60 migrations, ~2.7 s of CPU each time; a copy of the same empty schema takes ~0.05 s."""
    import shutil

    template = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"

    def put(database: Path) -> Path:
        if not database.exists():
            if not template.exists():
                from mlflow.tracking import MlflowClient

                MlflowClient(f"sqlite:///{template}").search_experiments()  # MLflow creates and migrates it
            database.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(template, database)
        return database

    return put


@pytest.fixture(scope="session", autouse=True)
def new_mlflow_databases_from_one_template(mlflow_database):
    """A job's first MLflow call in a new work folder creates `<work_dir>/mlflow.db`; in this process such a
    database starts as `mlflow_database`'s copy (the dozen and more work folders the tests make would
    otherwise cost ~2.7 s each). MLflow itself is untouched; jobs run as subprocesses get theirs from their
    tests (`mlflow_database`)."""
    from vad.tracking import runs

    real = runs.tracking_uri

    def tracking_uri(cfg, work_dir: str) -> str:
        uri = real(cfg, work_dir)
        if cfg.enabled and not cfg.tracking_uri:  # with tracking off, no database appears that the job did not make
            mlflow_database(Path(work_dir).expanduser().resolve() / "mlflow.db")
        return uri

    runs.tracking_uri = tracking_uri
    yield
    runs.tracking_uri = real
