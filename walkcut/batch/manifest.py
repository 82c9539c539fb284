"""The Parquet manifest of a batch run: one row per input, written whole or not at all.

Columns: ``input``, ``labels``, ``overlay`` (paths; ``overlay`` empty with ``--no-overlay``),
``status`` (``ok`` or ``error``; outputs done by an earlier run that left no row are ``ok`` with the
counts read back from the label map and NaN seconds), ``error`` (one line naming the file and the problem), ``segments``, ``height``, ``width``
(0 when failed), ``seconds_<stage>`` for decode, source, preprocess, engine, cuts, upsample, write
(NaN where the stage did not run), ``node`` (host that cut the image), and what resume checks:
``input_size`` and ``input_mtime_ns`` (the input when it was planned) and ``settings`` (the source
and cut settings, JSON). Path columns are UTF-8: bytes of a file name that are not UTF-8 are written
``\\xNN`` (:func:`~walkcut.batch.work.safe_text`).

While a run goes on the driver appends each row to a journal (one JSON line, flushed at once) and
writes the new rows to a part file under ``OUT/.walkcut-batch/`` every 30 s; the end of the run
merges the earlier manifest, the parts, the journals and the new rows (the latest row of an output
wins) into ``manifest.parquet`` and removes the parts. A run that is killed keeps its journal, so
the next run still knows the timings of everything that was done. Resume itself trusts the record
each output carries (:mod:`walkcut.outputs`): an output counts as done only when it says it was
made from this input with these settings.
"""

from __future__ import annotations

import io
import json
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
    + [("node", pa.string()), ("input_size", pa.int64()), ("input_mtime_ns", pa.int64()), ("settings", pa.string())]
)
#: Columns added in 0.3 (earlier manifests lack them: read as empty).
RESUME_COLUMNS = ("input_size", "input_mtime_ns", "settings")
PARTS_DIR = ".walkcut-batch"


def to_table(rows: list[dict]) -> pa.Table:
    """Rows (dicts with the :data:`SCHEMA` keys) as a table of that schema."""
    return pa.Table.from_pylist([{k: r.get(k) for k in SCHEMA.names} for r in rows], schema=SCHEMA)


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
    missing = set(SCHEMA.names) - set(table.column_names) - set(RESUME_COLUMNS)
    if missing:
        logger.warning("ignoring manifest %s: it lacks columns %s", path, sorted(missing))
        return []
    present = [n for n in SCHEMA.names if n in table.column_names]
    return [{**{k: None for k in RESUME_COLUMNS}, **row} for row in table.select(present).to_pylist()]


def read_journal(path: Path) -> list[dict]:
    """The rows of a journal; a line cut short by a kill is left out."""
    rows = []
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict) and "labels" in row:
                    rows.append(row)
    except (OSError, UnicodeDecodeError) as exc:
        logger.warning("ignoring unreadable journal %s: %s", path, exc)
    return rows


def is_manifest(path: Path) -> bool:
    """Whether ``path`` is a Parquet file with a walkcut manifest's columns (resume may read and
    rewrite it); a file that is not is never replaced without ``--overwrite``."""
    try:
        names = pq.read_schema(path).names
    except (OSError, pa.ArrowInvalid):
        return False
    return {"input", "labels", "overlay", "status"} <= set(names)


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
        million-image run writes a few hundred parts. Every row is also appended to a journal at
        once, so a killed driver loses no finished row.
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
        self._journal = None

    def earlier_rows(self) -> dict[str, dict]:
        """Rows from the previous manifest and from parts of interrupted runs, by labels path."""
        by_output: dict[str, dict] = {}
        sources = [self.path] if self.path.exists() else []
        if self.parts_dir.is_dir():
            sources += sorted(list(self.parts_dir.glob("part-*.parquet")) + list(self.parts_dir.glob("journal-*.jsonl")),
                              key=lambda p: p.stat().st_mtime)
        for source in sources:
            for row in (read_journal(source) if source.suffix == ".jsonl" else read_rows(source)):
                by_output[row["labels"]] = row
        return by_output

    def add(self, row: dict) -> None:
        self.rows.append(row)
        self._pending.append(row)
        self._append_journal(row)
        if len(self._pending) >= self.flush_rows or time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def _append_journal(self, row: dict) -> None:
        """One JSON line per row, flushed at once: a killed driver loses no finished row."""
        if self._journal is None:
            self.parts_dir.mkdir(parents=True, exist_ok=True)
            self._journal = open(self.parts_dir / f"journal-{self._run}.jsonl", "a", encoding="ascii")
        self._journal.write(json.dumps({k: row.get(k) for k in SCHEMA.names}) + "\n")
        self._journal.flush()

    def close_journal(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None

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
        self.close_journal()
        if self.parts_dir.is_dir():
            for part in [*self.parts_dir.glob("part-*.parquet"), *self.parts_dir.glob("journal-*.jsonl")]:
                part.unlink(missing_ok=True)
            try:
                os.rmdir(self.parts_dir)
            except OSError:
                pass  # something else lives there: leave it
        return final
