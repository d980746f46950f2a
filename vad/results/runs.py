"""The `runs` table: one row per scoring run, the projection of its `RunSummary`."""

from __future__ import annotations

import pyarrow as pa

from vad.config import StorageConfig
from vad.io.storage import filesystem, parse_uri, write_parquet_atomic
from vad.results.schema import RUNS_SCHEMA


def write_run_record(output_uri: str, record: dict, storage: StorageConfig | None = None) -> str:
    root = parse_uri(output_uri).join("runs", f"date={record['run_date']}")
    fs = filesystem(root, storage)
    table = pa.Table.from_pylist([record], schema=RUNS_SCHEMA)
    path = root.join(f"run-{record['run_id']}.parquet").path
    write_parquet_atomic(fs, path, table)
    return path
