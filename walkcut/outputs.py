"""The one output policy: every file any walkcut command writes goes through these checks.

* An existing file is replaced only when the user said ``--overwrite``; the refusal is one line that
  names the file and the flag, raised (:class:`OutputError`) before any work is done.
* An input is never replaced, ``--overwrite`` or not: an output that is the same file as an input
  (by name, through a symbolic link or a hard link) is refused.
* Files that belong together (a label map and its overlay, a TensorRT engine and its JSON) are
  written to temporary files first and then swapped in together
  (:func:`walkcut.runtime.imageio.write_all_or_none`): when a write fails, the old pair stays.
* Resume counts an output as done only when the output itself says it was made from this input with
  these options: label maps and overlays carry a *record* (a PNG ``tEXt`` chunk, keyword
  ``walkcut``) with the input's path, size and modification time, the source and cut settings, and
  the names of its pair. An output without a matching record (a user's own file with an output's
  name, a half-present pair, a result made with other options) is never replaced without
  ``--overwrite``.
* A label-frame folder (``walkcut video --labels-dir``) holds a marker file naming the run that
  wrote it; ``--overwrite`` clears only walkcut's own frame files of a marked folder.

The module sits below the command line, so library code (``walkcut.batch``) uses the same rules;
the command line turns :class:`OutputError` into a usage error (exit code 2).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import struct
import zlib
from pathlib import Path

#: Keyword of the PNG text chunk that records how an output was made.
RECORD_KEYWORD = b"walkcut"
#: Version of the record's layout.
RECORD_VERSION = 1
#: Marker file of a label-frame folder, and the names of the frames walkcut writes there.
FRAMES_MARKER = ".walkcut-frames.json"
FRAME_NAME = re.compile(r"^\d{6}\.png$")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class OutputError(ValueError):
    """An output cannot be written under the policy; ``str(exc)`` is the one line the user sees."""


# -- single files ---------------------------------------------------------------------------------

def shown(path) -> str:
    """A path for a message: bytes of a name that are not UTF-8 appear as ``\\xNN`` (a message
    must print on any terminal)."""
    return os.fsdecode(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether ``a`` and ``b`` name one file (same resolved path, or the same inode: hard links)."""
    a, b = Path(a), Path(b)
    try:
        if a.resolve() == b.resolve():
            return True
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output(path: str | os.PathLike, *, overwrite: bool, flag: str, inputs=()) -> Path:
    """Refuse (:class:`OutputError`) to write ``path`` when it is an input, or exists and
    ``overwrite`` is off. ``flag`` is the option that named it (``--json``), for the message."""
    path = Path(path)
    for item in inputs:
        if item is not None and same_file(path, item):
            raise OutputError(f"{flag} {shown(path)} is an input of this command ({shown(item)}); walkcut never replaces "
                              f"an input, --overwrite or not: choose another {flag}")
    if path.is_dir():
        raise OutputError(f"{flag} {shown(path)} is a folder; give a file name")
    if path.exists() and not overwrite:
        raise OutputError(f"{shown(path)} already exists; add --overwrite to replace it, or choose another {flag}")
    return path


def check_outputs(items, *, overwrite: bool, inputs=()) -> list[Path]:
    """:func:`check_output` for each ``(path, flag)`` of ``items`` (None paths are left out); also
    refuses two outputs that are one file. Returns the paths checked."""
    items = [(Path(p), flag) for p, flag in items if p is not None]
    for i, (path, flag) in enumerate(items):
        for other, other_flag in items[:i]:
            if same_file(path, other):
                raise OutputError(f"{other_flag} and {flag} name the same file {shown(path)}; give two different files")
        check_output(path, overwrite=overwrite, flag=flag, inputs=inputs)
    return [p for p, _ in items]


def refuse_inputs_as_outputs(inputs, outputs) -> None:
    """Refuse (:class:`OutputError`) an output path that is an input file, by name or by inode
    (hard links), --overwrite or not. Many files: one stat per input and per existing output."""
    names, inodes = {}, {}
    for item in inputs:
        item = Path(item)
        try:
            names[item.resolve()] = item
            st = item.stat()
            inodes[(st.st_dev, st.st_ino)] = item
        except OSError:
            continue
    for o in outputs:
        o = Path(o)
        hit = names.get(o.resolve())
        if hit is None and o.exists():
            st = o.stat()
            hit = inodes.get((st.st_dev, st.st_ino))
        if hit is not None:
            raise OutputError(f"{shown(o)} would replace the input {shown(hit)}; walkcut never replaces an input, --overwrite "
                              f"or not: choose another --out")


# -- records: how an output was made --------------------------------------------------------------

def _jsonable(value):
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, float) and value != value:
        return "nan"
    return value


def input_identity(path: str | os.PathLike) -> dict | None:
    """``{"path", "size", "mtime_ns"}`` of an input file (its resolved path), or None when it cannot
    be read. Names that are not UTF-8 keep their bytes (``os.fsdecode``; JSON escapes them)."""
    try:
        resolved = Path(path).resolve()
        st = resolved.stat()
    except OSError:
        return None
    return {"path": os.fsdecode(resolved), "size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


def source_record(spec) -> dict:
    """The settings of a source spec that decide its output: a pixel source's options; a model's
    file (resolved path, size, modification time) and backend. Thread counts are left out."""
    if spec is None:
        return {}
    if getattr(spec, "model", None) is not None:  # an EngineSpec
        model = Path(spec.model)
        ident = input_identity(model) or {"path": os.fsdecode(model.absolute())}
        return {"model": ident, "backend": getattr(spec, "backend", "auto")}
    if dataclasses.is_dataclass(spec):
        fields = {f.name: _jsonable(getattr(spec, f.name)) for f in dataclasses.fields(spec)}
        return {"pixels": {k: v for k, v in fields.items() if k != "threads"}}
    return {"source": repr(spec)}


def options_record(spec, options: dict) -> dict:
    """Canonical, JSON-able description of a run's settings: the source and the cut options."""
    record = {"source": source_record(spec), "cuts": {k: _jsonable(v) for k, v in sorted(options.items())}}
    return json.loads(json.dumps(record, sort_keys=True, default=str))


def make_record(input_path, settings: dict, outputs) -> dict:
    """The record written into each output of one input: the input's identity, the settings
    (:func:`options_record`) and the file names of the outputs made together."""
    return {"version": RECORD_VERSION, "input": input_identity(input_path), "settings": settings,
            "outputs": [os.fsdecode(Path(o).name) for o in outputs]}


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_with_record(png: bytes, record: dict) -> bytes:
    """``png`` with ``record`` as a ``tEXt`` chunk right after the header (ASCII JSON).

    Pixels are untouched: image readers skip text chunks. The chunk comes first so that
    :func:`read_record` reads a few hundred bytes, not the image.
    """
    if not png.startswith(_PNG_SIGNATURE):
        raise ValueError("not PNG data")
    ihdr_end = len(_PNG_SIGNATURE) + 8 + struct.unpack(">I", png[8:12])[0] + 4
    text = json.dumps(record, sort_keys=True, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    return png[:ihdr_end] + _chunk(b"tEXt", RECORD_KEYWORD + b"\0" + text) + png[ihdr_end:]


def read_record(path: str | os.PathLike) -> dict | None:
    """The record of a walkcut output, or None (not a PNG, no record, unreadable)."""
    try:
        with open(path, "rb") as f:
            if f.read(8) != _PNG_SIGNATURE:
                return None
            for _ in range(64):  # the record follows the header; a few chunks at most before pixels
                head = f.read(8)
                if len(head) < 8:
                    return None
                length, kind = struct.unpack(">I", head[:4])[0], head[4:]
                if kind in (b"IDAT", b"IEND") or length > 1 << 20:
                    return None
                data = f.read(length)
                f.seek(4, os.SEEK_CUR)
                if kind == b"tEXt" and data.startswith(RECORD_KEYWORD + b"\0"):
                    record = json.loads(data[len(RECORD_KEYWORD) + 1:].decode("ascii"))
                    return record if isinstance(record, dict) else None
    except (OSError, ValueError):
        return None
    return None


#: What :func:`resume_state` finds for one input's outputs.
NEW, DONE, OTHER_OPTIONS, OTHER_INPUT, FOREIGN = "new", "done", "other-options", "other-input", "foreign"


def resume_state(outputs, record: dict) -> tuple[str, Path | None]:
    """Whether ``outputs`` (the paths one input writes) are missing (``new``), were all made from
    this input with these settings (``done``), or are something else; with the file that decided.

    ``other-options``: complete, made from this input with other settings. ``other-input``: made from
    another file (or another version of it) under this name. ``foreign``: a half-present set, or a
    file that walkcut did not write (no record).
    """
    outputs = [Path(o) for o in outputs]
    present = [o for o in outputs if o.exists()]
    if not present:
        return NEW, None
    for o in present:
        found = read_record(o)
        if found is None or found.get("outputs") != record["outputs"]:
            return FOREIGN, o
        if found.get("input") != record["input"]:
            return OTHER_INPUT, o
        if found.get("settings") != record["settings"]:
            return OTHER_OPTIONS, o
    if len(present) < len(outputs):
        return FOREIGN, next(o for o in outputs if not o.exists())
    return DONE, None


def settings_difference(found: dict | None, wanted: dict) -> str:
    """A short text naming the settings that differ: ``threshold 0.3 (now 0.5)``."""
    found = found or {}
    flat_found, flat_wanted = _flatten(found), _flatten(wanted)
    keys = sorted(set(flat_found) | set(flat_wanted))
    diffs = [f"{k} {flat_found.get(k, 'unset')} (now {flat_wanted.get(k, 'unset')})" for k in keys
             if flat_found.get(k) != flat_wanted.get(k)]
    return ", ".join(diffs[:3]) + (f" and {len(diffs) - 3} more" if len(diffs) > 3 else "") or "other settings"


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k in ("source", "cuts", "pixels", "model"):
            out.update(_flatten(v, prefix if k in ("source", "cuts", "pixels") else f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def resume_refusal(state: str, where: Path, record: dict, *, resume_flag: str) -> OutputError:
    """The one-line refusal for an output that resume may not count as done nor replace."""
    if state == OTHER_OPTIONS:
        found = read_record(where) or {}
        return OutputError(f"{shown(where)} was made with other settings ({settings_difference(found.get('settings'), record['settings'])}); "
                           f"{resume_flag} does not mix results: add --overwrite to redo it, or choose another --out")
    if state == OTHER_INPUT:
        return OutputError(f"{shown(where)} was made from another file or an earlier version of "
                           f"{shown(record['input']['path']) if record['input'] else 'its input'}; "
                           f"add --overwrite to replace it, or choose another --out")
    if where.exists():
        return OutputError(f"{shown(where)} exists but walkcut did not write it for this input (or its pair is "
                           f"incomplete); add --overwrite to replace it, or choose another --out")
    return OutputError(f"{shown(where)} is missing beside the rest of its outputs; add --overwrite to redo them, "
                       f"or choose another --out")


# -- label-frame folders --------------------------------------------------------------------------

def prepare_frames_dir(folder: str | os.PathLike, *, overwrite: bool, source: str) -> int:
    """Make ``folder`` ready for a run's label frames (``NNNNNN.png``); returns the frames removed.

    A folder that holds no frame files is used as it is. Frames of an earlier run are removed with
    ``overwrite`` when the folder carries walkcut's marker (only files named like frames: nothing
    else in the folder is touched), and refused otherwise. Writes the marker for this run.
    Call it after every other check, right before the first frame is written.
    """
    folder = Path(folder)
    check_frames_dir(folder, overwrite=overwrite)
    frames = [p for p in folder.iterdir() if FRAME_NAME.match(p.name)] if folder.is_dir() else []
    marker = folder / FRAMES_MARKER
    from walkcut.runtime.imageio import atomic_write_bytes

    folder.mkdir(parents=True, exist_ok=True)
    for p in frames:
        p.unlink(missing_ok=True)
    atomic_write_bytes(marker, (json.dumps({"walkcut": "label frames", "input": source, "frames": "NNNNNN.png"},
                                           indent=2) + "\n").encode())
    return len(frames)


def check_frames_dir(folder: str | os.PathLike, *, overwrite: bool) -> None:
    """The checks of :func:`prepare_frames_dir` without touching anything (run before any work)."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    frames = [p for p in folder.iterdir() if FRAME_NAME.match(p.name)]
    if frames and not (folder / FRAMES_MARKER).is_file():
        raise OutputError(f"{shown(folder)} holds {len(frames)} frame file{'s' if len(frames) != 1 else ''} "
                          f"({sorted(frames)[0].name}, ...) that walkcut did not write (no {FRAMES_MARKER}); "
                          f"choose another --labels-dir")
    if frames and not overwrite:
        raise OutputError(f"{shown(folder)} holds {len(frames)} label frame{'s' if len(frames) != 1 else ''} of an "
                          f"earlier run; add --overwrite to clear them, or choose another --labels-dir")
