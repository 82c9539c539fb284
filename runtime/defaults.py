"""Every default and tuning constant of the runtime, with the reason for its value.

The modules that use a constant import it from here; the command line shows these values in its
``--help``. The C++ demo mirrors the shared ones in ``cpp_demo/include/walkcut/defaults.hpp``
(``kCostFloor`` there is ``COST_FLOOR`` here), and ``tests/test_defaults.py`` checks that both hold
the same values. How the defaults were chosen: ``bench/ABLATION.md`` and ``bench/RESULTS.md``.
"""

from __future__ import annotations

# --- Cuts (walkcut.runtime.cuts) -------------------------------------------------------------------
#: Graph built from the walk: ``walk`` cuts the random walk itself (best on BSDS500 and CamVid
#: averaged over the automatic rules, bench/ABLATION.md).
MODE = "walk"
#: Walk length t (cut P^t); longer walks give fewer, coarser segments.
POWER = 1
#: Stopping rule: parameter-free Otsu threshold on the tree's own log NCut costs.
THRESHOLD = "auto-ncut"
#: Most leaves the hierarchy grows to.
MAX_SEGMENTS = 32
#: Default smallest segment: ``max(1, n // MIN_SIZE_DIVISOR)`` nodes (4 patches on a 32 x 32 grid).
MIN_SIZE_DIVISOR = 256
#: Splits whose NCut is at least this are never grown (a random cut of a structureless graph
#: scores about 1: the walk leaves each half with probability 1/2).
EXPAND_LIMIT = 1.0
#: The automatic rules treat split costs below this as equal: a boundary that the walk crosses less
#: than once in a thousand steps is certain, and the exact size of such tiny costs (often rounding
#: noise around 1e-10 on nearly disconnected regions) must not drag the threshold down.
COST_FLOOR = 1e-3
#: When a tree has fewer than two split costs the automatic rules have no evidence to separate;
#: they fall back to these constants (NCut, scaled min-cut).
FALLBACK_NCUT = 0.5
FALLBACK_SCALED_MINCUT = 0.1
#: Sparse subgraphs up to this many nodes are cut as dense arrays (8 MB at 1024 nodes); measured
#: faster on pixel graphs (bench/bench_cuts.py).
DENSE_SUBGRAPH_MAX_NODES = 1024

# --- Spectral split (walkcut.runtime.cuts.spectral) ------------------------------------------------
#: Below this many nodes a dense ``eigh`` is faster than Lanczos.
DENSE_MAX_NODES = 160
#: Iterative solvers need at least this many nodes.
ITERATIVE_MIN_NODES = 16
#: The last-resort dense fallback is refused above this size (memory).
DENSE_FALLBACK_MAX_NODES = 6000
#: Lanczos relative residual: 1e-5 gives the same split for every seed on BSDS val pixel graphs.
EIGEN_TOL = 1e-5
#: Lanczos basis size, ``min(m - 1, LANCZOS_NCV)``.
LANCZOS_NCV = 24

# --- Transition matrices (walkcut.runtime.cuts.graph) ----------------------------------------------
#: Rows of a transition matrix may miss 1 by this much (fp16 engines round); they are then
#: renormalised. Beyond it the matrix is rejected.
ROW_TOL = 1e-2
#: Power iteration on the stationary distribution stops at this L1 change.
STATIONARY_TOL = 1e-9
STATIONARY_POWER_ITER = 10
#: Up to this many nodes the stationary distribution comes from a dense eigenproblem.
STATIONARY_DENSE_MAX = 32
STATIONARY_NCV = 16

# --- Segmenter (walkcut.runtime.segmenter) ---------------------------------------------------------
#: The source sees at most this longest side (area averaging): bounded memory on huge photos.
MAX_SOURCE_SIDE = 2048
#: Boundary-aware upsampling runs at most at this side, then labels are enlarged.
MAX_LABEL_SIDE = 4096

# --- Pixel source (walkcut.runtime.sources.pixels) -------------------------------------------------
#: Graph resolution R (R * R nodes).
GRID = 32
#: Accepted range of R.
MIN_GRID = 4
MAX_GRID = 256
#: Neighbourhood radius in cells: ``max(MIN_RADIUS, RADIUS_PER32 * R / 32)``.
MIN_RADIUS = 1.5
RADIUS_PER32 = 3.0
#: ``sigma_c`` = COLOR_SCALE x the median Lab distance of neighbouring cells. 0.7 scored 3% higher
#: auto-ncut Covering on BSDS500 val but made the cuts 2x slower and sensitive to rounding.
COLOR_SCALE = 1.0
#: Lower bound of that median (flat images).
MIN_SIGMA_COLOR = 1.0
#: Weight of a cell to itself (W + identity).
PIXEL_SELF_LOOP = 1.0

# --- Upsampling (walkcut.runtime.upsample) ---------------------------------------------------------
#: Colour similarity scale of the joint bilateral upsampler (RGB in [0, 1]).
UPSAMPLE_SIGMA_COLOR = 0.1
#: Spatial weight ``exp(-d^2 / UPSAMPLE_SPATIAL_DENOM)``, d in cells (sigma 0.5 cell).
UPSAMPLE_SPATIAL_DENOM = 0.5

# --- Drawing (walkcut.runtime.draw) ----------------------------------------------------------------
#: Opacity of the segment colours over the image.
OVERLAY_ALPHA = 0.45
#: Boundary thickness: ``max(1, round(max(H, W) / BOUNDARY_PIXELS_PER))`` pixels.
BOUNDARY_PIXELS_PER = 400.0

# --- Model contract (walkcut.runtime.sources.contract / engine) ------------------------------------
METADATA_KEY = "walkcut.contract"
CONTRACT_VERSION = 1
INPUT_NAME = "image"
OUTPUT_NAME = "attention"
#: Largest output grid the cuts handle within memory on an edge board (R = 96: 9216 nodes, a dense
#: (n, n) float64 matrix of 680 MB). The exporter offers 32 and 64.
MAX_ATTN_RES = 96
#: Layer presets of the exporter (``encoder``: down + mid blocks; ``all``: every layer).
LAYER_PRESETS = ("encoder", "all")

# --- Video (walkcut video) -------------------------------------------------------------------------
#: Fewer leaves grown per frame keeps the cuts within a frame budget (the automatic rules rarely
#: keep more than ~12 segments on street scenes).
VIDEO_MAX_SEGMENTS = 16
#: Boundary-aware upsampling at most at this side, then nearest-neighbour enlargement (boundaries
#: within 1.5 px at 480 px wide); saves ~1/3 of a frame's CPU time.
VIDEO_LABEL_SIDE = 320

#: Intervening-contour term of the pixel source (``PixelSource.contour_scale``): None = off. On
#: BSDS500 val it lifts auto-ncut Covering/PRI/VoI from 0.509/0.753/1.965 to 0.522/0.759/1.947 and
#: CamVid mIoU from 0.226 to 0.246 at 2.0, but the sharper graphs make the cuts ~1.5x slower and the
#: C++ demo does not compute it yet, so it stays opt-in (bench/RESULTS.md, "Quality v0.2").
CONTOUR_SCALE = None
