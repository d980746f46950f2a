import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
sys.path.insert(0, os.path.dirname(__file__))

# The fast tier (`pytest -m "not slow"`) is tests/unit; integration tests start Ray, an S3 server and
# train models, and real-data tests train on UCSD Ped2.
SLOW_FOLDERS = ("integration", "realdata")


# Under pytest-xdist (`./dev test` runs two workers, `--dist loadgroup`) a module runs whole on one worker, so its
# module-scoped fixtures are built once; the modules that score with the suite's trained conv_ae (the session
# fixture `checkpoint`) share a worker, so it is trained once. The longest groups are handed out first.
CHECKPOINT_MODULES = ("test_calibrate", "test_console", "test_nightly", "test_objects", "test_pipeline", "test_report")
FIRST = ("conv-ae", "test_training", "test_ped2_fast", "test_demo", "test_ray_head", "test_fleet", "test_worker_failures")


def _group(item) -> str:
    module = Path(item.fspath).stem
    return "conv-ae" if module in CHECKPOINT_MODULES else module


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if Path(item.fspath).relative_to(here).parts[0] in SLOW_FOLDERS:
            item.add_marker(pytest.mark.slow)
        item.add_marker(pytest.mark.xdist_group(_group(item)))
    # VAD_TEST_ORDER=reverse runs the tests backwards, to show that none depends on another's order.
    if os.environ.get("VAD_TEST_ORDER") == "reverse":
        items.reverse()
    elif getattr(config.option, "dist", "no") != "no":
        items.sort(key=lambda item: FIRST.index(_group(item)) if _group(item) in FIRST else len(FIRST))
