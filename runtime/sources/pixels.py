"""The weight-free source: a random walk over an R x R grid built from the image alone.

Classic Shi-Malik affinities between grid cells: colour similarity times spatial proximity,
limited to a disc of ``radius`` cells,

    w_ij = exp(-|c_i - c_j|^2 / (2 sigma_c^2)) * exp(-|x_i - x_j|^2 / (2 sigma_x^2)),  |x_i - x_j| <= radius,

with ``c`` the mean CIE Lab colour of a cell and ``x`` its grid position, times an intervening-contour
term (Malik et al. 2001) ``exp(-e_ij^2 / (2 sigma_e^2))``, where ``e_ij`` is the strongest colour edge
(Scharr on smoothed Lab, :func:`edge_map`) on the straight line between the two cell centres: two
cells of similar colour separated by a thin line or a sharp boundary are not neighbours; plus a self-loop of
weight 1 (a cell is fully similar to itself; it keeps every degree positive). The walk is
``P = D^-1 W``; it is reversible, so its stationary distribution is known in closed form,
``pi = d / sum(d)``, and is handed to the cuts with the matrix.

:class:`PixelSource` is a frozen dataclass of its options: it is its own picklable spec (``open()``
returns it; building a transition keeps no state), so worker processes and Ray tasks receive it as it
is. It carries no cut settings of its own (``cut_defaults`` is empty).

Defaults (chosen on BSDS500 val, see bench/RESULTS.md): ``radius`` 3 cells at R = 32 (scaled with R,
so it covers the same image area), ``sigma_x = radius / 2``, and ``sigma_c`` self-tuned per image as
``color_scale`` (1.0) times the median colour distance between neighbouring cells (so the graph
adapts to low- and high-contrast images alike); ``sigma_e`` likewise ``contour_scale`` (2.0; ``None`` turns the term off) times the
median intervening edge between neighbouring cells. The contour term was chosen on BSDS500 and CamVid
val (bench/ABLATION.md, "Quality v0.2" and "Quality v0.3" in bench/RESULTS.md).

References
----------
Shi & Malik, "Normalized Cuts and Image Segmentation", TPAMI 2000.
Zelnik-Manor & Perona, "Self-Tuning Spectral Clustering", NeurIPS 2004 (local scale).
Malik, Belongie, Leung & Shi, "Contour and Texture Analysis for Image Segmentation", IJCV 2001
(intervening contours).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import cv2
import numpy as np
import scipy.sparse as sp
from walkcut.runtime import defaults as _d


@dataclass(frozen=True, eq=False)
class Transition:
    """A random walk over an ``grid_shape`` patch grid (nodes in row-major order).

    ``stationary`` is set when known in closed form; ``cell_colors`` (R, R, 3) float32 RGB in [0, 1]
    are the mean colours of the cells, used by boundary-aware upsampling. ``contrast`` is the largest
    colour difference between neighbouring cells (CIE Lab Delta E) where the source measures it: below
    ``defaults.FLAT_CONTRAST`` the image has no visible boundary and is one segment.
    """

    P: object  # (n, n) ndarray or CSR
    grid_shape: tuple[int, int]
    stationary: np.ndarray | None = None
    cell_colors: np.ndarray | None = None
    contrast: float | None = None


def grid_cell_colors(image_rgb: np.ndarray, grid: int) -> np.ndarray:
    """Mean colour of each of ``grid x grid`` cells, (grid, grid, 3) float32 in [0, 1]."""
    cells = cv2.resize(image_rgb.astype(np.float32), (grid, grid), interpolation=cv2.INTER_AREA)
    cells *= np.float32(1.0 / 255.0)  # scaled after averaging: one full-size pass fewer per frame
    return cells


def edge_map(image_rgb: np.ndarray, grid: int) -> np.ndarray:
    """Colour edge strength on a ``(grid * s, grid * s)`` raster, ``s = max(4, ceil(256 / grid))``.

    The image is area-resized so each grid cell covers ``s x s`` raster pixels, converted to CIE Lab,
    smoothed (Gaussian, sigma 1 px) and differentiated with Scharr kernels; the strength is the
    Euclidean norm of the six Lab derivatives.
    """
    s = max(_d.EDGE_MIN_SCALE, -(-_d.EDGE_RASTER_SIDE // grid))
    side = grid * s
    img = cv2.resize(image_rgb.astype(np.float32) / 255.0, (side, side), interpolation=cv2.INTER_AREA)
    lab = cv2.GaussianBlur(cv2.cvtColor(img, cv2.COLOR_RGB2LAB), (0, 0), _d.EDGE_BLUR_SIGMA)
    gx = cv2.Scharr(lab, cv2.CV_32F, 1, 0)
    gy = cv2.Scharr(lab, cv2.CV_32F, 0, 1)
    sq = gx * gx
    sq += gy * gy
    total = sq[..., 0] + sq[..., 1]  # channel slices: numpy's sum over a length-3 last axis is 5x slower
    total += sq[..., 2]
    return np.sqrt(total)  # (side, side)


def intervening_contours(edges: np.ndarray, grid: int, i: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Strongest edge on the straight line from the centre of each cell ``i`` to the cell ``(dy, dx)``
    further on (all of them inside the grid), sampled once per raster pixel of ``edges``."""
    s = edges.shape[0] // grid
    span = max(abs(dy), abs(dx))
    # The quarter cell around each centre is left out: an edge there runs through the cell itself
    # (its mean colour already mixes both sides), and counting it would cut the cell off from all
    # its neighbours at once.
    margin = _d.CONTOUR_MARGIN / span
    t = np.linspace(margin, 1.0 - margin, max(2, span * s // 2 + 1))
    y0, x0 = np.divmod(i, grid)
    c = (s - 1) / 2.0
    oy = np.rint(t * dy * s).astype(np.intp)  # (steps,) offsets along the line, shared by every cell
    ox = np.rint(t * dx * s).astype(np.intp)
    side = edges.shape[1]
    start = (y0 * s + int(c)) * side + (x0 * s + int(c))  # flat raster index of each cell's centre
    samples = np.ascontiguousarray(edges).ravel().take(start[None, :] + (oy * side + ox)[:, None])  # (steps, cells)
    return samples.max(axis=0).astype(np.float64)


def contour_strengths(image_rgb: np.ndarray, grid: int, pairs) -> tuple[np.ndarray, float]:
    """The contour term's inputs: the strongest edge between each ``(i, dy, dx)`` of ``pairs`` (cells
    ``i`` and their neighbours ``(dy, dx)`` further on; concatenated in that order) and the strongest
    edge of the image; one :func:`edge_map` per call (``walkcut bench --frame-budget`` times it)."""
    edges = edge_map(image_rgb, grid)
    ic = [intervening_contours(edges, grid, i, int(dy), int(dx)) for i, dy, dx in pairs]
    return np.concatenate(ic), float(edges.max())


def _neighbour_offsets(radius: float) -> np.ndarray:
    r = int(np.floor(radius))
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    keep = (dy**2 + dx**2 <= radius**2) & ~((dy == 0) & (dx == 0))
    return np.stack([dy[keep], dx[keep]], axis=1)


def neighbour_pairs(grid: int, radius: float) -> list[tuple[np.ndarray, int, int]]:
    """``[(i, dy, dx), ...]``: for each offset within ``radius`` cells, the cells ``i`` whose neighbour
    ``(dy, dx)`` further on lies inside the ``grid x grid`` grid. Each unordered pair once (the first
    nonzero coordinate of its offset positive): every term of the weight is symmetric, so the other
    half is the transpose."""
    offsets = _neighbour_offsets(radius)
    offsets = offsets[(offsets[:, 0] > 0) | ((offsets[:, 0] == 0) & (offsets[:, 1] > 0))]
    yy, xx = np.divmod(np.arange(grid * grid), grid)
    pairs = []
    for dy, dx in offsets:
        ny, nx = yy + dy, xx + dx
        pairs.append((np.flatnonzero((ny >= 0) & (ny < grid) & (nx >= 0) & (nx < grid)), int(dy), int(dx)))
    return pairs


def graph_memory_bytes(grid: int, radius: float | None = None) -> int:
    """Estimated peak memory (bytes) of one image at graph resolution ``grid`` through the pixel
    source and the cuts (see ``defaults.PIXEL_BYTES_PER_EDGE``); ``radius`` as :class:`PixelSource`'s."""
    r = float(radius) if radius is not None else max(_d.MIN_RADIUS, _d.RADIUS_PER32 * grid / 32)
    stored = grid * grid * (len(_neighbour_offsets(r)) + 1)
    return _d.PIXEL_BASE_BYTES + _d.PIXEL_BYTES_PER_EDGE * stored


@dataclass(frozen=True)
class PixelSource:
    """Builds :class:`Transition` from an RGB image with colour + position affinities.

    Parameters
    ----------
    grid : int, default 32
        R: the graph has R * R nodes.
    radius : float, optional
        Neighbourhood radius in cells; default ``3 * grid / 32`` (at least 1.5).
    color_scale : float, default 1.0
        ``sigma_c`` = ``color_scale`` x the median Lab distance between neighbouring cells. 0.7 scored
        3% higher auto-ncut Covering on BSDS500 val (0.530 vs 0.514) but made the cuts 2x slower and
        sensitive to rounding (the C++ and Python cuts no longer agreed); 2.0 and 4.0 were worse
        (bench/RESULTS.md).
    contour_scale : float or None, default 2.0
        ``sigma_e`` = ``contour_scale`` x the median intervening edge between neighbouring cells;
        ``None`` leaves the contour term out (the 0.1 graph; ``--contour-scale off`` in the C++ demo,
        which computes the same term, cpp_demo/src/pixels.cpp). On BSDS500 val 1.0, 1.5, 3.0 and 4.0 scored no better than 2.0
        (bench/ABLATION.md).

    Notes
    -----
    A per-cell texture term (the Lab standard deviation of each cell as a third affinity factor) was
    measured no better on BSDS500 val ("Quality v0.3" in bench/ABLATION.md) and removed.
    """

    grid: int = _d.GRID
    radius: float | None = None
    color_scale: float = _d.COLOR_SCALE
    contour_scale: float | None = _d.CONTOUR_SCALE

    def __post_init__(self) -> None:
        if isinstance(self.grid, bool) or not isinstance(self.grid, (int, np.integer)) or not _d.MIN_GRID <= self.grid <= _d.MAX_GRID:
            raise ValueError(f"grid must be an integer in [{_d.MIN_GRID}, {_d.MAX_GRID}], got {self.grid!r}")
        if self.radius is not None and not (np.isfinite(self.radius) and self.radius >= 1):
            raise ValueError(f"radius must be a number >= 1 (cells), got {self.radius!r}")
        if not (np.isfinite(self.color_scale) and self.color_scale > 0):
            raise ValueError(f"color_scale must be a positive number, got {self.color_scale!r}")
        if self.contour_scale is not None and not (np.isfinite(self.contour_scale) and self.contour_scale > 0):
            raise ValueError(f"contour_scale must be a positive number or None, got {self.contour_scale!r}")

    def open(self) -> PixelSource:
        """The source this spec describes: itself (it holds no model and no per-image state)."""
        return self

    @property
    def cut_defaults(self) -> Mapping:
        """Cut settings of this source: none (the package defaults apply)."""
        return MappingProxyType({})

    @property
    def effective_radius(self) -> float:
        return float(self.radius) if self.radius is not None else max(_d.MIN_RADIUS, _d.RADIUS_PER32 * self.grid / 32)

    def transition(self, image_rgb: np.ndarray) -> Transition:
        """Random walk over the image's R x R grid (``image_rgb``: (H, W, 3) uint8 RGB)."""
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image_rgb.shape}")
        R = int(self.grid)
        colors = grid_cell_colors(image_rgb, R)  # (R, R, 3) RGB [0, 1]
        lab = cv2.cvtColor(colors, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float64)
        radius = self.effective_radius
        pairs = neighbour_pairs(R, radius)
        rows, cols, dist2, cdist2 = [], [], [], []
        for i, dy, dx in pairs:
            j = i + (dy * R + dx)  # row-major: the neighbour (dy, dx) further on
            rows.append(i)
            cols.append(j)
            dist2.append(np.full(i.size, float(dy * dy + dx * dx)))
            cdist2.append(((lab[i] - lab[j]) ** 2).sum(axis=1))
        rows = np.concatenate(rows)
        cols = np.concatenate(cols)
        dist2 = np.concatenate(dist2)
        cdist2 = np.concatenate(cdist2)
        near = dist2 <= 2.0  # the 8-neighbourhood sets the colour scale
        sigma_c = self.color_scale * max(float(np.median(np.sqrt(cdist2[near]))), _d.MIN_SIGMA_COLOR)
        sigma_x = radius / 2.0
        logw = -cdist2 / (2 * sigma_c**2) - dist2 / (2 * sigma_x**2)
        if self.contour_scale is not None:
            ic, strongest = contour_strengths(image_rgb, R, pairs)
            # Self-tuned like sigma_c; the floor keeps flat images (no edges anywhere) finite.
            sigma_e = self.contour_scale * max(float(np.median(ic[near])), _d.CONTOUR_FLOOR_OF_MAX * strongest,
                                                 _d.CONTOUR_FLOOR)
            logw -= ic**2 / (2 * sigma_e**2)
        n = R * R
        W = sp.csr_matrix((np.exp(logw), (rows, cols)), shape=(n, n))
        # The self-loop (a cell is fully similar to itself) keeps every degree >= 1 even where all
        # neighbour weights underflow, so P = D^-1 W always exists.
        W = W + W.T + _d.PIXEL_SELF_LOOP * sp.identity(n, format="csr")
        d = np.asarray(W.sum(axis=1)).ravel()
        P = sp.diags(1.0 / d) @ W
        contrast = float(np.sqrt(cdist2[near].max())) if near.any() else 0.0
        return Transition(P=sp.csr_matrix(P), grid_shape=(R, R), stationary=d / d.sum(), cell_colors=colors,
                          contrast=contrast)
