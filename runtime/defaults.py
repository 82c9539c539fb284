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
#: The reference method cuts sparse subgraphs up to this many nodes as dense arrays (8 MB at 1024
#: nodes); measured faster on pixel graphs (bench/bench_cuts.py). The fast method keeps them sparse
#: down to DENSE_MAX_NODES (shift-invert needs the sparse graph).
DENSE_SUBGRAPH_MAX_NODES = 1024

# --- Eigen-solves of one node (walkcut.runtime.cuts.spectral, .krylov) -----------------------------
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

# --- Transition matrices (walkcut.runtime.cuts.graph, walkcut.runtime.cuts.stationary) -------------
#: Rows of a transition matrix may miss 1 by this much (fp16 engines round); they are then
#: renormalised. Beyond it the matrix is rejected.
ROW_TOL = 1e-2
#: Power iteration on the stationary distribution stops at this L1 change.
STATIONARY_TOL = 1e-9
STATIONARY_POWER_ITER = 10
#: Up to this many nodes the stationary distribution comes from a dense eigenproblem.
STATIONARY_DENSE_MAX = 32
STATIONARY_NCV = 16

# --- Reading images (walkcut.runtime.imageio) ------------------------------------------------------
#: Largest image (width x height) read, checked from the file header before decoding: decoding needs
#: about 15 bytes a pixel on the way to RGB (a 20000 x 20000 PNG of 1.2 MB took 6.15 GB). The value
#: is Pillow's ``MAX_IMAGE_PIXELS`` (a quarter gigabyte of 3-byte pixels, about 89.5 Mpx); raise it
#: with ``--max-pixels`` or the environment variable below.
MAX_IMAGE_PIXELS = 1024 * 1024 * 1024 // 4 // 3
MAX_PIXELS_ENV = "WALKCUT_MAX_PIXELS"

# --- Segmenter (walkcut.runtime.segmenter) ---------------------------------------------------------
#: The source sees at most this longest side (area averaging): bounded memory on huge photos.
MAX_SOURCE_SIDE = 2048
#: Boundary-aware upsampling runs at most at this side, then labels are enlarged.
MAX_LABEL_SIDE = 4096

# --- Pixel source (walkcut.runtime.sources.pixels) -------------------------------------------------
#: Graph resolution R (R * R nodes).
GRID = 32
#: Accepted range of R. Memory and time grow as R**4 (n = R * R cells, each with about
#: pi * (3R/32)**2 neighbours): one 481 x 321 image took 1.1 s / 154 MB at R = 64, 3.7 s / 401 MB at 96,
#: 37 s / 1.07 GB at 128 and minutes and gigabytes beyond (2-core VM under load, load average 6-9);
#: R = 256 would need about 16 GB. 128 is the most this runtime honours in seconds and 1 GB.
MIN_GRID = 4
MAX_GRID = 128
#: Peak memory of one image through the pixel source and the cuts: about this many bytes per stored
#: affinity (n * (neighbours + 1)), measured 125-137 B at R = 64-128, plus the interpreter and its
#: libraries (PIXEL_BASE_BYTES). Commands refuse a --grid whose estimate exceeds the memory available.
PIXEL_BYTES_PER_EDGE = 140
PIXEL_BASE_BYTES = 100 * 1024 * 1024
#: Neighbourhood radius in cells: ``max(MIN_RADIUS, RADIUS_PER32 * R / 32)``.
MIN_RADIUS = 1.5
RADIUS_PER32 = 3.0
#: ``sigma_c`` = COLOR_SCALE x the median Lab distance of neighbouring cells. 0.7 scored 3% higher
#: auto-ncut Covering on BSDS500 val but made the cuts 2x slower and sensitive to rounding.
COLOR_SCALE = 1.0
#: Lower bound of that median (flat images).
MIN_SIGMA_COLOR = 1.0
#: An image whose neighbouring cells all differ by less than this CIE Lab Delta E (about the just
#: noticeable difference, Sharma 2003) has no visible boundary: it is one segment. The graph cannot
#: tell, since sigma_c is tuned to the image's own differences: a flat image gives a plain lattice,
#: which Normalized Cuts halves into quadrants. BSDS500 val: the smallest largest difference at R = 32
#: is 27.9 (median 65.5), so no natural image there is affected.
FLAT_CONTRAST = 2.3
#: Weight of a cell to itself (W + identity).
PIXEL_SELF_LOOP = 1.0

#: Edge raster of the contour term: ``s = max(EDGE_MIN_SCALE, ceil(EDGE_RASTER_SIDE / R))`` raster pixels
#: per cell, Lab smoothed by a Gaussian of EDGE_BLUR_SIGMA pixels before the Scharr derivatives.
EDGE_MIN_SCALE = 4
EDGE_RASTER_SIDE = 256
EDGE_BLUR_SIGMA = 1.0
#: The intervening-contour line between two cell centres leaves out this fraction of a cell around each
#: centre (a cell's own interior edges do not separate it from its neighbour).
CONTOUR_MARGIN = 0.25
#: ``sigma_e`` >= CONTOUR_FLOOR_OF_MAX x the strongest edge and >= CONTOUR_FLOOR (flat images).
CONTOUR_FLOOR_OF_MAX = 1e-3
CONTOUR_FLOOR = 1e-6

# --- Upsampling (walkcut.runtime.upsample) ---------------------------------------------------------
#: How grid labels become pixel labels unless the caller or the model says otherwise: joint-bilateral
#: votes of the nearest cells follow the image's edges (a model may carry ``snap``, see below).
UPSAMPLE = "joint-bilateral"
#: Colour similarity scale of the joint bilateral upsampler (RGB in [0, 1]).
UPSAMPLE_SIGMA_COLOR = 0.1
#: Spatial weight ``exp(-d^2 / UPSAMPLE_SPATIAL_DENOM)``, d in cells (sigma 0.5 cell).
UPSAMPLE_SPATIAL_DENOM = 0.5

#: ``upsample="snap"``: the fine segmentation it snaps to, the weight-free source at this grid cut into
#: this many leaves (every grown split kept), upsampled joint-bilaterally; each of its segments takes
#: the label most of its pixels got. On BSDS500 / CamVid val under ViT attention (bench/ABLATION.md,
#: "Real attention"), 48 leaves: 0.593 / 0.816 / 1.743 (Covering / PRI / VoI) and 0.410 mIoU; 64:
#: VoI 1.750; 96: 1.779. Voting on the 32 x 32 grid instead of on pixels was cheaper but cost CamVid
#: mIoU (0.376 at 32 leaves) or VoI (1.754 at 48).
SNAP_GRID = 32
SNAP_SEGMENTS = 48

# --- Drawing (walkcut.runtime.draw) ----------------------------------------------------------------
#: Opacity of the segment colours over the image.
OVERLAY_ALPHA = 0.45
#: Boundary thickness: ``max(1, round(max(H, W) / BOUNDARY_PIXELS_PER))`` pixels.
BOUNDARY_PIXELS_PER = 400.0

# --- Model contract (walkcut.runtime.sources.contract / engine) ------------------------------------
METADATA_KEY = "walkcut.contract"
#: Version 2 added ``backbone``, ``normalization`` "imagenet"/"zero_to_one" and ``cut_defaults``
#: (vision-transformer backbones); version 1 models (Stable Diffusion exports of walkcut 0.2) are
#: still read: they mean ``backbone="unet"`` and no per-model cut settings.
CONTRACT_VERSION = 2
SUPPORTED_CONTRACT_VERSIONS = (1, 2)
#: Pixel scalings a contract may name: ``minus_one_to_one`` (x / 127.5 - 1, Stable Diffusion's VAE),
#: ``imagenet`` ((x / 255 - mean) / std with the ImageNet statistics below, DINO/DINOv2 and most
#: ViTs), ``zero_to_one`` (x / 255).
NORMALIZATIONS = ("minus_one_to_one", "imagenet", "zero_to_one")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Backbones a contract may name: the Stable Diffusion UNet (S a multiple of 64) or a vision
#: transformer (S a multiple of the patch size, R = S / patch).
BACKBONES = ("unet", "vit")
#: Cut settings an exported model may carry as its own defaults (``cut_defaults``): the ones tuned for
#: its backbone. Explicit arguments and flags always win.
CUT_DEFAULT_KEYS = ("mode", "power", "threshold", "min_size", "max_segments", "upsample")
#: The cut settings a vision-transformer export writes into its contract's ``cut_defaults``, chosen on
#: real ViT attention (DINOv2-S-derived ``vit_s_focus.onnx``, S = 224, 16 x 16 patches) over BSDS500
#: and CamVid val with one setting for all images (bench/ABLATION.md, "Real attention"): the walk
#: itself, one step, Otsu on the split costs counted once, boundaries snapped to the pixel walk.
VIT_CUT_DEFAULTS = {"mode": "walk", "power": 1, "threshold": "auto-ncut-unweighted", "upsample": "snap"}
#: Layers whose attention a vision-transformer export averages, unless ``walkcut export --layers`` says
#: otherwise: ``all``, ``lasthalf``, ``lastN`` (the N last layers) or a comma list of 0-based layer
#: indices. The later half (6..11 of a 12-layer ViT-S) is more semantic than all 12: on BSDS500 /
#: CamVid val it raised Covering / PRI and CamVid mIoU under the chosen rule (bench/ABLATION.md, "Real
#: attention"); ``lasthalf`` says it for any depth.
VIT_LAYERS = "lasthalf"
INPUT_NAME = "image"
OUTPUT_NAME = "attention"
#: Largest output grid the cuts handle within memory on an edge board (R = 96: 9216 nodes, a dense
#: (n, n) float64 matrix of 680 MB). The exporter offers 32 and 64.
MAX_ATTN_RES = 96
#: Layer presets of the exporter (``encoder``: down + mid blocks; ``all``: every layer).
LAYER_PRESETS = ("encoder", "all")

# --- Video (walkcut video) -------------------------------------------------------------------------
#: Leaves grown per frame: the same tree as ``walkcut segment`` (MAX_SEGMENTS), so a video frame gets
#: the partition an image gets. The automatic rules read the split costs of the whole grown tree:
#: a 16-leaf tree (the video default before 0.4) moved the Otsu threshold and collapsed some frames
#: (101-frame CamVid clip: 14% of frames kept under 60% of segment's segments; at 32, with each frame
#: cut alone, every frame is segment's partition; bench/RESULTS.md, "Speed v3: the frame").
VIDEO_MAX_SEGMENTS = MAX_SEGMENTS
#: Boundary-aware upsampling at most at this side, then nearest-neighbour enlargement (boundaries
#: within 2 px at 1280 x 720). Since the colour vote runs only along segment borders
#: (runtime/upsample.py), a 480 x 360 frame is upsampled whole in about 4.5 ms on one core.
VIDEO_LABEL_SIDE = 640

#: Intervening-contour term of the pixel source (``PixelSource.contour_scale``; None = off). On the
#: full val sets with today's cuts (the fast method) it lifts auto-ncut BSDS500 Covering/PRI/VoI from
#: 0.511/0.756/1.959 to 0.524/0.763/1.930 and CamVid mIoU from 0.232 to 0.245 (bench/RESULTS.md,
#: "Quality v0.3"); 1.5 and 3.0 were no better. On by default since the shift-invert sparse solver made
#: the cuts fast enough. The C++ demo computes the same term with the same default (kContourScale in
#: cpp_demo/include/walkcut/defaults.hpp; ``--contour-scale off`` there is ``contour_scale=None`` here).
CONTOUR_SCALE = 2.0

#: Named settings of the pixel source and its cuts for ``--preset`` (every command that segments)
#: and ``walkcut.runtime.sources.spec.source_spec(preset=...)``. ``source`` holds ``PixelSource`` options, ``cuts``
#: the ``Segmenter.segment`` options. ``default`` is what ``PixelSource()`` and the cut defaults give;
#: ``street`` serves street scenes (CamVid), whose protocol rewards more, finer segments than natural
#: images do (bench/RESULTS.md, "Quality v0.3"). Explicit command-line options override a preset.
PRESETS: dict[str, dict[str, dict]] = {
    "default": {"source": {"grid": GRID, "contour_scale": CONTOUR_SCALE},
                "cuts": {"threshold": THRESHOLD, "max_segments": MAX_SEGMENTS}},
    # R = 64 with a sharper colour scale, segments of at least 24 cells (1/170 of the frame; the
    # default at R = 64 is 16) and the automatic min-cut rule, which on CamVid keeps ~28 of the 32
    # leaves: mIoU 0.388 / pixel accuracy 0.658 on all 101 CamVid val frames. Many times the
    # defaults' time per frame (bench/RESULTS.md, "Quality v0.3"): not a real-time setting.
    "street": {"source": {"grid": 64, "contour_scale": 2.0, "color_scale": 0.7},
               "cuts": {"threshold": "auto-mincut", "max_segments": 32, "min_size": 24}},
}

# --- The fast cut method (runtime/cuts/nodes.py, stationary.py, graph.py, sparse.py; measurements in
# bench/RESULTS.md, "Cut engine v2") -------------------------------------------------------------

#: Residual tolerance of the float32 stationary solve: partitions were identical to the float64
#: tolerance-1e-9 solve on every dense walk measured, at a third of the products.
FAST_STATIONARY_TOL = 1e-4
#: The fast method's Arnoldi on ``P^T`` (runtime/cuts/stationary.py ``stationary_and_second``) stops at an
#: L1 residual ``|pi P - pi|_1`` below FAST_STATIONARY_TOL x this: 0.1 gave errors against the float64
#: solve (6e-5 to 2e-4 L1 on the bench's n = 4096 walks) like v2's power steps + ARPACK at 1e-4.
STATIONARY_RESIDUAL_FACTOR = 0.1
#: Residual checked every this many products (an eigen-solve of the small Hessenberg matrix each).
STATIONARY_CHECK = 2
#: Products of the unrestarted Arnoldi; a walk that mixes more slowly (BSDS500 dense image walks:
#: 48-120+ products) continues in ARPACK (restarted, STATIONARY_NCV vectors) from its best vector,
#: which keeps the Hessenberg eigen-solves of the checks small (at 120 steps they cost more than
#: the products).
STATIONARY_MAX_STEPS = 40
#: Vectors handed from a node to its children (its top Ritz vectors). 16 covers the leading
#: eigenvectors of the children of a node several levels down.
BLOCK_SIZE = 16
#: Relative residual of the Fiedler vector of the dense Lanczos node solver on a float64 graph.
#: Pixel graphs have clusters of eigenvalues within 1e-6 of each other (nearly disconnected specks);
#: at 1e-5 a solver returned a mixture of them whose sweep cut nothing useful (coffee.jpg, R = 64),
#: at 1e-6 the same split as the reference path.
FAST_TOL = 1e-6
#: The same on a float32 (dense) graph, where single-precision rounding floors the residual near
#: 1e-6; 1e-5 is also the reference path's ARPACK tolerance.
FAST_TOL_F32 = 1e-5
#: Of the BLOCK_SIZE start vectors, this many are random instead of recycled: a child's leading
#: eigenvector can be nearly missing from its parent's Ritz vectors, and a start that lacks a
#: direction entirely cannot grow it (coffee.jpg, R = 64: without them a child converged to its 5th
#: eigenvector).
RANDOM_COLUMNS = 4
#: Lanczos steps of a dense node before the reference solver takes over; residual checked every
#: LANCZOS_CHECK steps (a tridiagonal eigen-solve each time). Why Lanczos rather than block LOBPCG on
#: the recycled block: at n = 1024 a 32-column block product costs 10-20 single products (the matrix
#: sits in cache) and LOBPCG was slower than the reference path; Lanczos started from one
#: Rayleigh-Ritz step on the recycled block was faster at both 1024 and 4096 nodes with the same
#: partitions (bench/RESULTS.md, "Cut engine v2"; the fast method's LOBPCG path was removed in v0.3,
#: LOBPCG stays in the reference solver's fallback chain).
LANCZOS_MAX_STEPS = 300
LANCZOS_CHECK = 4
#: Dense nodes of at least this many members check the residual after every step while the check
#: is cheap against a product (the full tridiagonal eigen-solve of step j costs ~j^3: every step while
#: 8 j^3 <= m^2, i.e. up to j = 50 at m = 1024 and 128 at m = 4096; then every LANCZOS_CHECK steps).
LANCZOS_CHECK_EVERY_STEP_NODES = 1024
#: Bytes of the row chunks a dense node block is gathered in (runtime/cuts/nodes.py ``gather_block``):
#: the chunk is split into the child's columns and summed while it sits in a 1 MB L2 cache.
GATHER_CHUNK_BYTES = 1 << 18
#: Elements per chunk of the sweep's masked row sums: 64 K (256 KB of float32, its mask and the rows)
#: stay in a 1 MB L2 cache, so the sweep reads the node's block once from memory (4 M elements, the
#: v2 value, streamed the mask and its float copy through L3/memory: 3.5 block passes at n = 4096).
SWEEP_CHUNK_ELEMENTS = 1 << 16
#: Fewest rows per chunk of the fast method's dense sweep (runtime/cuts/sweep.py ``sweep_ncut_dense``):
#: its chunks are row gathers read once by a mat-vec, so a chunk larger than L2 costs little while
#: each chunk costs ~25 us of Python.
SWEEP_MIN_ROWS = 64
#: Up to this many members the dense sweep takes the 2-D prefix sums of the whole permuted block:
#: fewer numpy calls, which is what a small node's sweep costs (35 vs 51 us at 24 members, equal near 56).
SWEEP_SMALL_NODES = 48
#: Tile side of the in-place symmetrisation of ``W`` (OpenCV transposes): 256 (256 KB of float32)
#: measured best at n = 4096 (8.7 single mat-vecs; 128: 10.0, 512: 10.1) and within 3% of 128 at n = 1024.
SYMMETRIZE_TILE = 256

#: Sparse (pixel) graphs: every node above DENSE_MAX_NODES runs Lanczos on ``(L + sigma I)^-1`` from a
#: sparse factorisation of its graph (runtime/cuts/sparse.py). On CamVid frames (R = 32, 480 x 360)
#: it needed 7-9 solves per node against ARPACK's 100-300 products on dense float32 copies, and its
#: labels do not depend on the start vector (bench/RESULTS.md, "Cut engine v2, sparse graphs").
#: Shift sigma of ``L + sigma I``: below every lambda_2 measured on pixel graphs (1.5e-9 at R = 64 is
#: the smallest seen; a smaller lambda_2 only means more nearly disconnected parts, which any vector
#: in that eigenspace separates) and far above double rounding of ``L`` (~1e-15).
SHIFT_INVERT_SIGMA = 1e-9
#: Relative Ritz residual of the shift-invert Lanczos; 1e-5, 1e-6 and 1e-8 gave identical labels on 12
#: CamVid frames, 1e-8 costs about one solve more per node than 1e-6.
SHIFT_INVERT_TOL = 1e-8
#: Solves before the reference solver takes over (7-9 needed per node on CamVid and BSDS500 val).
SHIFT_INVERT_MAX_STEPS = 60
#: Ritz residual checked every this many solves (a solve costs more than a dense step, so more often).
SHIFT_INVERT_CHECK = 2
#: Banded Cholesky is used while ``(bandwidth + 1) * nodes`` is at most this (64 MB of float64):
#: R = 64 pixel graphs need 1.6 M entries, R = 128 (radius 12) 25 M and go to SuperLU.
SHIFT_INVERT_BANDED_MAX_ENTRIES = 1 << 23

#: Cut methods (``method=``): "fast" (the default; same partitions, recycled Krylov starts, float32
#: graphs, shift-invert on sparse graphs) and "reference" (the v0.1 algorithm, every node solved from
#: scratch; kept for tests and `walkcut bench --compare-methods`). "Engine" means the exported model.
METHODS = ("fast", "reference")
METHOD = "fast"
