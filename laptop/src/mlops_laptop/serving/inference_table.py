"""The AI-Gateway inference table of the local endpoint: `<catalog>.<schema>.<prefix>_payload`.

The endpoint process has no Spark and must not touch the Derby metastore, so it writes Parquet
files straight into the table's directory under the local warehouse, batched off the request path
by a background thread; each file appears whole (written under a hidden name, then renamed). The
local deployer, which has Spark, registers that directory as the table with the Databricks schema.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from mlops_laptop.platform.local import LocalPlatform
from mlops_laptop.platform.warehouse import create_table_at, local_table_dir
from mlops_template.atomic_files import write_atomically
from mlops_template.platform.names import to_local
from mlops_template.serving.spec import InferenceTableSpec

log = logging.getLogger(__name__)

# A request or response larger than the logging limit is logged as null with
# MAX_REQUEST_SIZE_EXCEEDED / MAX_RESPONSE_SIZE_EXCEEDED in `logging_error_codes`
# (https://docs.databricks.com/aws/en/ai-gateway/inference-tables, "Limitations"). The pages state
# 10 MiB for AI-Gateway (Beta) endpoints and 1 MiB for payload logging of (CPU) model serving
# endpoints: the laptop applies the stricter 1 MiB, so nothing logged here goes unlogged there.
MAX_LOGGED_PAYLOAD_BYTES = 1024 * 1024
REQUEST_TOO_LARGE = "MAX_REQUEST_SIZE_EXCEEDED"
RESPONSE_TOO_LARGE = "MAX_RESPONSE_SIZE_EXCEEDED"

# The columns and types Databricks documents for AI-Gateway inference tables.
PAYLOAD_COLUMNS = (
    ("databricks_request_id", pa.string(), "STRING"),
    ("client_request_id", pa.string(), "STRING"),
    ("request_date", pa.date32(), "DATE"),
    ("request_time", pa.timestamp("us", tz="UTC"), "TIMESTAMP"),
    ("status_code", pa.int32(), "INT"),
    ("sampling_fraction", pa.float64(), "DOUBLE"),
    ("execution_duration_ms", pa.int64(), "BIGINT"),
    ("request", pa.string(), "STRING"),
    ("response", pa.string(), "STRING"),
    ("served_entity_id", pa.string(), "STRING"),
    ("logging_error_codes", pa.list_(pa.string()), "ARRAY<STRING>"),
    ("requester", pa.string(), "STRING"),
)
PAYLOAD_SCHEMA = pa.schema([(name, arrow_type) for name, arrow_type, _ in PAYLOAD_COLUMNS])
PAYLOAD_DDL = ", ".join(f"{name} {sql_type}" for name, _, sql_type in PAYLOAD_COLUMNS)


@dataclass(frozen=True)
class InferenceRecord:
    """One row of the payload table: one request, answered or rejected."""

    databricks_request_id: str
    client_request_id: str | None
    request_time: datetime
    status_code: int
    execution_duration_ms: int
    request: str | None
    response: str | None
    served_entity_id: str | None
    requester: str
    logging_error_codes: list[str] = field(default_factory=list)
    sampling_fraction: float = 1.0

    @property
    def request_date(self) -> date:
        return self.request_time.date()

    def as_row(self) -> dict[str, object]:
        return asdict(self) | {"request_date": self.request_date}


def logged_payload(text: str | None, error_code: str) -> tuple[str | None, list[str]]:
    """The payload as logged: null with `error_code` when its UTF-8 exceeds the logging limit."""
    limit = MAX_LOGGED_PAYLOAD_BYTES
    if text is not None and 4 * len(text) > limit and len(text.encode("utf-8")) > limit:
        return None, [error_code]
    return text, []


def register_local_table(platform: LocalPlatform, spec: InferenceTableSpec) -> str:
    """Make the endpoint's payload directory readable from Spark as the inference table."""
    table = spec.payload_table
    directory = local_table_dir(platform.state_dir, table)
    directory.mkdir(parents=True, exist_ok=True)
    platform.ensure_schema(table)
    create_table_at(platform.spark, to_local(table), directory, ddl=PAYLOAD_DDL)
    log.info("inference table %s reads %s", table, directory)
    return table


@dataclass
class WriterStats:
    """What the writer did: records written, write attempts that failed, records lost or dropped."""

    written: int = 0
    failed_writes: int = 0
    lost: int = 0  # records of a file that could not be written after every retry
    dropped: int = 0  # records refused: the queue was full or the writer closed
    last_error: str | None = None

    @property
    def healthy(self) -> bool:
        return self.lost == 0 and self.dropped == 0


class InferenceTableWriter:
    """Queues records and writes them as Parquet files from a background thread.

    A file is written when `flush_rows` records are waiting or `flush_seconds` after the first one;
    `close()` writes what is left (the endpoint calls it on shutdown, SIGTERM included). A failed
    write is retried `retries` times, waiting `retry_seconds` and then twice as long each time;
    records that still cannot be written, and records refused by a full queue or written after
    `close()`, are counted in `stats` (which `/health` reports) and logged as errors: nothing is
    lost silently. After a loss,
    later files get one attempt each until one is written again, so a broken table cannot stall
    the shutdown's flush.
    """

    def __init__(
        self,
        directory: Path,
        table: str,
        *,
        flush_rows: int = 1000,
        flush_seconds: float = 1.0,
        max_queued: int = 100_000,
        retries: int = 5,
        retry_seconds: float = 0.2,
    ) -> None:
        self.directory = directory
        self.table = table  # its three-level name
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.retries = retries
        self.retry_seconds = retry_seconds
        self.stats = WriterStats()
        self._failing = False
        self._closed = False
        self._closing = threading.Lock()  # no record is queued behind the closing marker
        self._queue: queue.Queue[InferenceRecord | None] = queue.Queue(maxsize=max_queued)
        self._thread = threading.Thread(
            target=self._run, name=f"inference-table-{directory.name}", daemon=True
        )

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._thread.start()

    def write(self, record: InferenceRecord) -> None:
        """Queue a record without blocking; when the queue is full or the writer is closed the
        record is dropped and counted."""
        with self._closing:
            if self._closed:
                self._drop("the writer is closed")
                return
            try:
                self._queue.put_nowait(record)
            except queue.Full:
                self._drop("the queue is full")

    def close(self) -> None:
        """Write every queued record, then stop the thread; later writes are dropped and counted."""
        with self._closing:
            self._closed = True
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _drop(self, reason: str) -> None:
        self.stats.dropped += 1
        log.error(
            "inference table %s: dropped a record, %s (%d so far)", self.table, reason, self.stats.dropped
        )

    def _run(self) -> None:
        while (first := self._queue.get()) is not None:
            batch = [first]
            closing = self._collect(batch, deadline=time.monotonic() + self.flush_seconds)
            self._write_with_retries(batch)
            if closing:
                return

    def _collect(self, batch: list[InferenceRecord], deadline: float) -> bool:
        """Add queued records to `batch` until it is full or the deadline passes; True when closing."""
        while len(batch) < self.flush_rows:
            try:
                record = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return False
            if record is None:
                return True
            batch.append(record)
        return False

    def _write_with_retries(self, records: list[InferenceRecord]) -> None:
        retries = 0 if self._failing else self.retries
        for attempt in range(retries + 1):
            try:
                self._write_file(records)
            except Exception as error:  # whatever failed, the records must be retried and accounted for
                self.stats.failed_writes += 1
                self.stats.last_error = f"{type(error).__name__}: {error}"
                if attempt < retries:
                    delay = self.retry_seconds * 2**attempt
                    log.warning(
                        "could not write %d inference records to %s (%s); retrying in %.1f s",
                        len(records),
                        self.directory,
                        self.stats.last_error,
                        delay,
                    )
                    time.sleep(delay)
                continue
            self.stats.written += len(records)
            self._failing = False
            return
        self._failing = True
        self.stats.lost += len(records)
        log.error(
            "lost %d inference records (%d so far): %d attempts to write to %s failed, last: %s",
            len(records),
            self.stats.lost,
            retries + 1,
            self.directory,
            self.stats.last_error,
        )

    def _write_file(self, records: list[InferenceRecord]) -> None:
        name = f"part-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet"
        table = pa.Table.from_pylist([record.as_row() for record in records], schema=PAYLOAD_SCHEMA)
        write_atomically(self.directory / name, lambda temporary: pq.write_table(table, temporary))
        log.debug("wrote %d inference records to %s", len(records), name)
