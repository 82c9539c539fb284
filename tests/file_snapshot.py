"""Snapshots of a folder's files, for tests that promise every file present before a command is
byte-identical after it (the output policy batteries)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` by relative path: the SHA-256 of its bytes. A symbolic link is
    recorded as its target (never followed into folders, so link loops end) plus the bytes of the
    file it reaches, so a write through a link shows up as a change."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(folder) / name
            rel = os.fsdecode(p.relative_to(root).as_posix())
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
            if p.is_symlink():
                out[rel] = f"link:{os.readlink(p)}:{digest}"
            elif digest:
                out[rel] = digest
    return out


def assert_unchanged(before: dict[str, str], root: Path) -> None:
    """Every file of ``before`` is still there with the same bytes (new files are allowed)."""
    after = snapshot(root)
    lost = [k for k in before if k not in after]
    changed = [k for k in before if k in after and after[k] != before[k]]
    assert not lost and not changed, f"lost {lost}, changed {changed}"
