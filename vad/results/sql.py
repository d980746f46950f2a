"""SQL over the results with DuckDB.

Results are exposed through Arrow datasets (local or S3, via pyarrow), so no
DuckDB extension has to be downloaded and nothing can be written back: the
views are read-only scans of the Parquet files.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from vad.config import StorageConfig
from vad.io.storage import filesystem, parse_uri
from vad.results.schema import ERRORS_SCHEMA, EVENTS_SCHEMA, FEEDBACK_SCHEMA, MANIFEST_SCHEMA, MASKS_SCHEMA, OBJECTS_SCHEMA, PARTITION_SCHEMA, RUNS_SCHEMA, SCORES_SCHEMA

log = logging.getLogger(__name__)
T = TypeVar("T")

TABLES = {
    "scores": SCORES_SCHEMA,
    "masks": MASKS_SCHEMA,
    "objects": OBJECTS_SCHEMA,
    "events": EVENTS_SCHEMA,
    "feedback": FEEDBACK_SCHEMA,
    "runs": RUNS_SCHEMA,
    "errors": ERRORS_SCHEMA,
    "manifest": MANIFEST_SCHEMA,
}
PARTITIONED_BY_CAMERA = ("scores", "masks", "objects", "events")
UNPARTITIONED = ("feedback",)  # one file per answer, named by it

# Per-video regularity score of Hasan et al. 2016 over the clip scores.
REGULARITY_VIEW = """
CREATE VIEW scores_regularity AS
SELECT *,
       1 - (score - min(score) OVER v) / nullif(max(score) OVER v, 0) AS regularity
FROM scores
WINDOW v AS (PARTITION BY run_id, video_uri)
"""


def _files(fs: pafs.FileSystem, path: str) -> list[str]:
    info = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    return [f.path for f in info if f.is_file and f.path.endswith(".parquet") and "/." not in f.path]


def _dataset(fs: pafs.FileSystem, path: str, table: str, exclude: frozenset[str] = frozenset()) -> pads.Dataset:
    schema = TABLES[table]
    files = [f for f in _files(fs, path) if f not in exclude]
    if table in UNPARTITIONED:
        return pads.dataset(files, schema=schema, filesystem=fs, format="parquet")
    partition_schema = PARTITION_SCHEMA if table in PARTITIONED_BY_CAMERA else PARTITION_SCHEMA.remove(1)
    return pads.dataset(
        files,
        schema=pa_schema_with(schema, partition_schema),
        filesystem=fs,
        format="parquet",
        partitioning=pads.partitioning(partition_schema, flavor="hive"),
        partition_base_dir=path,
    )


def pa_schema_with(schema, partition_schema):
    return pa.schema(list(schema) + list(partition_schema), metadata=schema.metadata)


def connect(results_uri: str, storage: StorageConfig | None = None, exclude: frozenset[str] = frozenset()) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with views `scores`, `masks`, `objects`, `events`, `feedback`, `runs`, `errors`, `manifest` and
    `scores_regularity` over the results (less the files in `exclude`)."""
    root = parse_uri(results_uri)
    fs = filesystem(root, storage)
    con = duckdb.connect(":memory:")
    for name in TABLES:
        con.register(f"_{name}_arrow", _dataset(fs, root.join(name).path, name, exclude))
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM _{name}_arrow")
    con.execute(REGULARITY_VIEW)
    # Read-only from here on: no COPY/ATTACH/file reads or writes, and the setting cannot be undone.
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def unreadable_files(results_uri: str, storage: StorageConfig | None = None) -> dict[str, str]:
    """Result files whose Parquet footer cannot be read (path -> why): a write cut short or a file
    that is not Parquet. Costs one footer read per file, so it runs only after a query failed."""
    root = parse_uri(results_uri)
    fs = filesystem(root, storage)
    bad = {}
    for table in TABLES:
        for path in _files(fs, root.join(table).path):
            try:
                with fs.open_input_file(path) as handle:
                    pq.read_metadata(handle)
            except (OSError, pa.ArrowException) as exc:
                bad[path] = str(exc).splitlines()[0]
    return bad


def with_readable_files(results_uri: str, storage: StorageConfig | None, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
    """`work(connection)` over the results; when it fails on unreadable files, they are named in a
    warning and left out, and it runs again over the rest."""
    exclude: frozenset[str] = frozenset()
    for attempt in range(2):
        con = connect(results_uri, storage, exclude)
        try:
            return work(con)
        except duckdb.Error as exc:
            bad = unreadable_files(results_uri, storage) if attempt == 0 and "Parquet" in str(exc) else {}
            if not bad:
                raise
            for path, reason in sorted(bad.items()):
                log.warning("skipped unreadable result file %s (%s)", path, reason)
            exclude = frozenset(bad)
        finally:
            con.close()
    raise AssertionError("unreachable")


def run_query(results_uri: str, sql: str, storage: StorageConfig | None = None):
    """Run one SQL statement; returns (column names, rows). Unreadable result files are skipped with a warning."""

    def query(con: duckdb.DuckDBPyConnection):
        cursor = con.execute(sql)
        if cursor.description is None:
            return [], []
        return [d[0] for d in cursor.description], cursor.fetchall()

    return with_readable_files(results_uri, storage, query)


def format_table(columns: list[str], rows: list[tuple], max_width: int = 48) -> str:
    def cell(value) -> str:
        text = "NULL" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)
        return text if len(text) <= max_width else text[: max_width - 1] + "…"

    body = [[cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in body]) for i, c in enumerate(columns)]
    line = "-+-".join("-" * w for w in widths)
    out = [" | ".join(c.ljust(w) for c, w in zip(columns, widths)), line]
    out += [" | ".join(v.ljust(w) for v, w in zip(r, widths)) for r in body]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)
