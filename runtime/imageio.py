"""Reading user images and writing results: clear errors, whole files or none."""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from pathlib import Path

import cv2
import numpy as np


logger = logging.getLogger(__name__)

#: Transparent pixels become this colour (white, as image viewers show them on a page).
ALPHA_BACKGROUND = 255

_alpha_said = threading.Event()


class ImageReadError(ValueError):
    """An input image cannot be used; the message names the file and the problem."""


def read_image(path) -> np.ndarray:
    """Read any image OpenCV decodes as (H, W, 3) uint8 RGB.

    Grayscale is replicated to three channels, 16-bit is scaled to 8-bit, and an image with an
    alpha channel is composited onto white (the colours under transparent pixels are often
    arbitrary, and cutting them would make segments nobody sees); the first such image of the
    process is reported with a logged warning.

    Raises
    ------
    ImageReadError
        Missing file, a directory, an empty file, or bytes that do not decode as an image.
    """
    p = Path(path)
    if not p.exists():
        raise ImageReadError(f"{p}: no such file")
    if p.is_dir():
        raise ImageReadError(f"{p}: is a directory, expected an image file")
    if p.stat().st_size == 0:
        raise ImageReadError(f"{p}: file is empty (0 bytes)")
    data = np.fromfile(str(p), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise ImageReadError(f"{p}: not a readable image (corrupt, truncated, or not an image format OpenCV decodes)")
    if img.ndim == 3 and img.shape[2] == 4 and not _alpha_said.is_set():
        _alpha_said.set()
        logger.warning("%s has an alpha channel: transparent pixels are composited onto white "
                       "(said once for all such images)", p)
    return to_rgb8(img, source=str(p))


def to_rgb8(img: np.ndarray, *, source: str = "image") -> np.ndarray:
    """OpenCV-decoded array (BGR/BGRA/gray, 8/16-bit/float) -> (H, W, 3) uint8 RGB.

    BGRA is composited onto white: ``rgb * a + 255 * (1 - a)``.
    """
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype in (np.float32, np.float64):
        img = np.clip(img * 255.0, 0, 255).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ImageReadError(f"{source}: unsupported pixel type {img.dtype}")
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.ndim == 3 and img.shape[2] == 1:
        return cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2RGB)
    if img.ndim == 3 and img.shape[2] == 4:
        alpha = img[:, :, 3:4].astype(np.float32) / 255.0  # (H, W, 1)
        blend = img[:, :, :3].astype(np.float32) * alpha + ALPHA_BACKGROUND * (1.0 - alpha)
        return cv2.cvtColor(np.rint(blend).astype(np.uint8), cv2.COLOR_BGR2RGB)
    if img.ndim == 3 and img.shape[2] == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    raise ImageReadError(f"{source}: unsupported image layout {img.shape}")


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once at import: os.umask is process-wide, not for use from threads


def atomic_write_bytes(path, data: bytes, *, make_parents: bool = False) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename:
    readers see the old file or the whole new one, never a partial file. ``make_parents`` creates
    the folder first. Returns ``path``."""
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; results get the usual permissions
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def encode_png(array: np.ndarray, *, rgb: bool = True) -> bytes:
    """PNG bytes of a uint8 RGB image or a uint8/uint16 single-channel map."""
    img = cv2.cvtColor(array, cv2.COLOR_RGB2BGR) if rgb and array.ndim == 3 else array
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise RuntimeError(f"PNG encoding failed for an array of shape {array.shape} and type {array.dtype}")
    return buf.tobytes()


def write_rgb_png(path, image_rgb: np.ndarray) -> None:
    atomic_write_bytes(path, encode_png(image_rgb, rgb=True))


def write_temporary(path: Path, data: bytes) -> Path:
    """Write ``data`` to a new temporary file beside ``path`` (``.<name>.<random>.part``, usual
    permissions); returns it. Removed again when the write fails."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def swap_in(moves) -> None:
    """Rename each ``(temporary, target)`` of ``moves`` onto its target, all or none.

    Existing targets are first renamed aside (``.<name>.<random>.old``); when a rename fails, the
    targets already replaced get their old files back and the temporaries are removed, so the set
    of files is the old one or the new one, never a mix. The aside copies are removed at the end.
    """
    moves = [(Path(t), Path(p)) for t, p in moves]
    aside: list[tuple[Path, Path]] = []  # (backup, target)
    placed: list[Path] = []
    try:
        for _, target in moves:
            if target.exists() or target.is_symlink():
                fd, backup = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent)
                os.close(fd)
                os.replace(target, backup)
                aside.append((Path(backup), target))
        for tmp, target in moves:
            os.replace(tmp, target)
            placed.append(target)
    except BaseException:
        for target in placed:
            target.unlink(missing_ok=True)
        for backup, target in aside:
            os.replace(backup, target)
        for tmp, _ in moves:
            tmp.unlink(missing_ok=True)
        raise
    for backup, _ in aside:
        backup.unlink(missing_ok=True)


def write_all_or_none(pairs) -> None:
    """Write every ``(path, bytes)`` (parent folders created), or none of them.

    Every file is first written to a temporary beside its target; only when all are on disk are
    they swapped in together (:func:`swap_in`). A failure part-way (a full disk on the second file)
    leaves the old files as they were, so a label map never sits beside another run's overlay.
    Used by ``walkcut segment``, ``walkcut batch`` and the TensorRT engine export.
    """
    written: list[tuple[Path, Path]] = []
    try:
        for path, data in pairs:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            written.append((write_temporary(path, data), path))
    except BaseException:
        for tmp, _ in written:
            tmp.unlink(missing_ok=True)
        raise
    swap_in(written)
