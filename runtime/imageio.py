"""Reading user images and writing results: clear errors, whole files or none."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import threading
from pathlib import Path

import cv2
import numpy as np

from walkcut.runtime import defaults as _d


logger = logging.getLogger(__name__)

#: Transparent pixels become this colour (white, as image viewers show them on a page).
ALPHA_BACKGROUND = 255

_alpha_said = threading.Event()
_stderr_lock = threading.Lock()


@contextlib.contextmanager
def quiet_native_stderr():
    """Capture what native libraries (libpng, libjpeg, libtiff, OpenCV) print on file descriptor 2
    while the block runs, and log it (DEBUG, shown with ``-vv``) instead: a bad file is reported by
    the one error line of its caller, not by a codec's own lines beside it.

    File descriptors are process-wide: blocks of several threads are serialised, and a thread that
    writes to stderr meanwhile has its text logged too. Where fd 2 cannot be redirected (no such
    descriptor), the block runs as it is.
    """
    with _stderr_lock:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):
            yield
            return
        with tempfile.TemporaryFile() as capture:
            os.dup2(capture.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                capture.seek(0)
                text = capture.read().decode("utf-8", "replace")
        for line in text.splitlines():
            if line.strip():
                logger.debug("native library: %s", line.strip())


class ImageReadError(ValueError):
    """An input image cannot be used; the message names the file and the problem."""


class ImageTooLargeError(ImageReadError):
    """An image has more pixels than the limit (:func:`max_image_pixels`)."""


def max_image_pixels() -> int:
    """The pixel limit in force: ``$WALKCUT_MAX_PIXELS`` when set, else ``defaults.MAX_IMAGE_PIXELS``."""
    text = os.environ.get(_d.MAX_PIXELS_ENV, "").strip()
    if not text:
        return _d.MAX_IMAGE_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{_d.MAX_PIXELS_ENV}={text!r}: expected a whole number of pixels >= 1")
    return value


def _megapixels(n: int) -> str:
    return f"{n / 1e6:.1f} Mpx" if n >= 100_000 else f"{n} pixels"


def header_size(path) -> tuple[int, int] | None:
    """``(width, height)`` read from the file header (PNG, JPEG, BMP, TIFF, WebP, PNM, ...) without
    decoding the pixels, or None when the header gives no size."""
    import imagesize

    try:
        width, height = imagesize.get(str(path))
    except (OSError, ValueError):
        return None
    return (int(width), int(height)) if width > 0 and height > 0 else None


def check_pixel_limit(path, width: int, height: int, limit: int | None = None) -> None:
    """Raise :class:`ImageTooLargeError` when ``width x height`` exceeds ``limit`` (default: the limit in force)."""
    limit = max_image_pixels() if limit is None else limit
    if width * height > limit:
        raise ImageTooLargeError(
            f"{path}: {width} x {height} = {_megapixels(width * height)} exceeds the pixel limit of "
            f"{_megapixels(limit)}; raise it with --max-pixels {width * height} (or {_d.MAX_PIXELS_ENV})")


def read_image(path, *, max_pixels: int | None = None) -> np.ndarray:
    """Read any image OpenCV decodes as (H, W, 3) uint8 RGB.

    Images larger than ``max_pixels`` (default: :func:`max_image_pixels`) are refused from their
    header, before any pixel is decoded; an image whose header gives no size is checked after decoding.

    Grayscale is replicated to three channels, 16-bit is scaled to 8-bit, and an image with an
    alpha channel is composited onto white (the colours under transparent pixels are often
    arbitrary, and cutting them would make segments nobody sees); the first such image of the
    process is reported with a logged warning.

    Raises
    ------
    ImageReadError
        Missing file, a directory, an empty file, or bytes that do not decode as an image
        (:class:`ImageTooLargeError`: more pixels than the limit).
    """
    p = Path(path)
    if not p.exists():
        raise ImageReadError(f"{p}: no such file")
    if p.is_dir():
        raise ImageReadError(f"{p}: is a directory, expected an image file")
    if p.stat().st_size == 0:
        raise ImageReadError(f"{p}: file is empty (0 bytes)")
    limit = max_image_pixels() if max_pixels is None else max_pixels
    size = header_size(p)
    if size is not None:
        check_pixel_limit(p, *size, limit)
    data = np.fromfile(str(p), dtype=np.uint8)
    with quiet_native_stderr():  # libpng / libjpeg warnings: the error below is the one line
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    del data
    if img is None or img.size == 0:
        raise ImageReadError(f"{p}: not a readable image (corrupt, truncated, or not an image format OpenCV decodes)")
    if size is None:
        check_pixel_limit(p, img.shape[1], img.shape[0], limit)
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
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as exc:
        raise _named(exc, path) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; results get the usual permissions
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise _named(exc, path) from exc
        raise
    return path


def _named(exc: OSError, path: Path) -> OSError:
    """The same error, naming the file the caller asked for rather than the temporary ``.part`` file."""
    if exc.errno is None:
        return exc
    return type(exc)(exc.errno, exc.strerror, str(path))


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
