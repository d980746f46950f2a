"""Parquet output: atomic file writes and the per-run metrics table."""

from __future__ import annotations

import os
import uuid

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from vad.config import StorageConfig
from vad.schema import RUNS_SCHEMA
from vad.storage import filesystem, parse_uri


def write_parquet_atomic(fs: pafs.FileSystem, path: str, table: pa.Table) -> None:
    """Readers never see a half-written file: local files are renamed into place; an S3 object
    only becomes visible when its (multipart) upload completes."""
    parent = path.rsplit("/", 1)[0]
    if isinstance(fs, pafs.LocalFileSystem):
        fs.create_dir(parent, recursive=True)
        tmp = f"{parent}/.{path.rsplit('/', 1)[1]}.{uuid.uuid4().hex[:8]}.tmp"
        pq.write_table(table, tmp, filesystem=fs, compression="zstd")
        os.replace(tmp, path)
    else:
        pq.write_table(table, path, filesystem=fs, compression="zstd")


def write_run_record(output_uri: str, record: dict, storage: StorageConfig | None = None) -> str:
    root = parse_uri(output_uri).join("runs", f"date={record['run_date']}")
    fs = filesystem(root, storage)
    table = pa.Table.from_pylist([record], schema=RUNS_SCHEMA)
    path = root.join(f"run-{record['run_id']}.parquet").path
    write_parquet_atomic(fs, path, table)
    return path
