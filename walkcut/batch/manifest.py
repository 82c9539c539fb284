"""The Parquet manifest of a batch run: one row per input, written whole or not at all.

Columns: ``input``, ``labels``, ``overlay`` (paths; ``overlay`` empty with ``--no-overlay``),
``status`` (``ok``, ``error``, or ``skipped``: complete outputs found from an earlier run that left
no row), ``error`` (one line naming the file and the problem), ``segments``, ``height``, ``width``
(0 when failed), ``seconds_<stage>`` for decode, source, preprocess, engine, cuts, upsample, write
(NaN where the stage did not run) and ``node`` (host that cut the image).

While a run goes on the driver writes the new rows to a part file under ``OUT/.walkcut-batch/``
every 30 s; the end of the run merges the earlier manifest, the parts and the new rows (the latest
row of an output wins) into ``manifest.parquet`` and removes the parts. A run that is killed keeps its parts, so the next
run still knows the timings of what was done; the outputs themselves are what resume trusts.
"""

from __future__ import annotations

import io
import logging
import os
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from walkcut.batch.work import STAGES
from walkcut.runtime.imageio import atomic_write_bytes

logger = logging.getLogger(__name__)

SCHEMA = pa.schema(
    [("input", pa.string()), ("labels", pa.string()), ("overlay", pa.string()), ("status", pa.string()),
     ("error", pa.string()), ("segments", pa.int32()), ("height", pa.int32()), ("width", pa.int32())]
    + [(f"seconds_{s}", pa.float64()) for s in STAGES]
    + [("node", pa.string())]
)
PARTS_DIR = ".walkcut-batch"


def to_table(rows: list[dict]) -> pa.Table:
    """Rows (dicts with the :data:`SCHEMA` keys) as a table of that schema."""
    return pa.Table.from_pylist([{k: r[k] for k in SCHEMA.names} for r in rows], schema=SCHEMA)


def write_table(path: Path, rows: list[dict]) -> None:
    """Write ``rows`` as a Parquet file at ``path`` atomically."""
    buf = io.BytesIO()
    pq.write_table(to_table(rows), buf)
    atomic_write_bytes(path, buf.getvalue())


def read_rows(path: Path) -> list[dict]:
    """The rows of a manifest or part file; [] (with a warning) for one that cannot be read."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        logger.warning("ignoring unreadable manifest %s: %s", path, exc)
        return []
    missing = set(SCHEMA.names) - set(table.column_names)
    if missing:
        logger.warning("ignoring manifest %s: it lacks columns %s", path, sorted(missing))
        return []
    return table.select(SCHEMA.names).to_pylist()


class ManifestWriter:
    """Collects rows during a run, flushes them to part files, and writes the final manifest.

    Parameters
    ----------
    path : Path
        The final manifest (``OUT/manifest.parquet`` by default).
    parts_dir : Path
        Where part files go while the run lasts.
    flush_seconds, flush_rows : float, int
        A part file is written when rows have waited this long, or when this many are waiting: a
        million-image run writes a few hundred parts, and a killed driver loses at most 30 s of rows
        (their outputs are on disk and are skipped by the next run all the same).
    """

    def __init__(self, path: Path, parts_dir: Path, *, flush_seconds: float = 30.0, flush_rows: int = 10000) -> None:
        self.path = Path(path)
        self.parts_dir = Path(parts_dir)
        self.flush_seconds = float(flush_seconds)
        self.flush_rows = int(flush_rows)
        self._last_flush = time.monotonic()
        self.rows: list[dict] = []  # every row of this run
        self._pending: list[dict] = []
        self._run = uuid.uuid4().hex[:8]
        self._part = 0

    def earlier_rows(self) -> dict[str, dict]:
        """Rows from the previous manifest and from parts of interrupted runs, by labels path."""
        by_output: dict[str, dict] = {}
        sources = [self.path] if self.path.exists() else []
        if self.parts_dir.is_dir():
            sources += sorted(self.parts_dir.glob("part-*.parquet"), key=lambda p: p.stat().st_mtime)
        for source in sources:
            for row in read_rows(source):
                by_output[row["labels"]] = row
        return by_output

    def add(self, row: dict) -> None:
        self.rows.append(row)
        self._pending.append(row)
        if len(self._pending) >= self.flush_rows or time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Write the rows not yet on disk as one part file."""
        self._last_flush = time.monotonic()
        if not self._pending:
            return
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        write_table(self.parts_dir / f"part-{self._run}-{self._part:06d}.parquet", self._pending)
        self._part += 1
        self._pending = []

    def finish(self, order: list[str], carried: dict[str, dict]) -> list[dict]:
        """Write the manifest: one row per labels path in ``order``; remove the part files.

        ``carried`` holds the rows of outputs skipped in this run (from earlier runs). Returns the
        rows written.
        """
        latest = dict(carried)
        for row in self.rows:
            latest[row["labels"]] = row
        final = [latest[key] for key in order if key in latest]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_table(self.path, final)
        self._pending = []
        if self.parts_dir.is_dir():
            for part in self.parts_dir.glob("part-*.parquet"):
                part.unlink(missing_ok=True)
            try:
                os.rmdir(self.parts_dir)
            except OSError:
                pass  # something else lives there: leave it
        return final
