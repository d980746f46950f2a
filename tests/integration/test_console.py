"""What a person running the nightly job sees: a progress bar, warnings that matter and the summary;
Ray's own output goes to the job's log file (shown with -v)."""

import json
import subprocess
import sys
from pathlib import Path

from helpers import job_config, write_yaml

REPO = Path(__file__).resolve().parents[2]
RAY_NOISE = ("core_worker", "Execution plan", "logging_progress", "(TrainController", "(SplitCoordinator", "Traceback", "raylet")


def _score(config: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vad", *flags, "score", "--config", str(config), "--date", "2026-11-24"],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )


def test_the_console_shows_progress_and_the_summary_and_the_log_holds_the_rest(s3, archive, checkpoint, tmp_path, mlflow_database):
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

    loud = _score(config, "-v")  # the same run again (nothing new to score), everything on the console
    assert loud.returncode == 0 and "INFO vad.scoring.job: run " in loud.stderr
