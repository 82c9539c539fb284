// Every default and tuning constant the C++ demo shares with the Python runtime. They mirror
// runtime/defaults.py (walkcut.runtime.defaults), where each one's reason is written: kFooBar here is
// FOO_BAR there, and tests/test_defaults.py checks that both hold the same values. Constants marked
// "C++ only" have no Python twin.
#pragma once

namespace walkcut::defaults {

// cuts (runtime/cuts/hierarchy.py)
inline constexpr double kExpandLimit = 1.0;            // EXPAND_LIMIT
inline constexpr double kFallbackNcut = 0.5;           // FALLBACK_THRESHOLD["ncut"]
inline constexpr double kFallbackScaledMincut = 0.1;   // FALLBACK_THRESHOLD["scaled_mincut"]
inline constexpr int kMaxSegments = 32;                // cut_transition_matrix(max_segments=32)
inline constexpr int kMinSizeDivisor = 256;            // default_min_size: max(1, n // 256)
inline constexpr double kCostFloor = 1e-3;             // COST_FLOOR: auto rules see max(cost, 1e-3)
inline constexpr int kDenseSubgraphMaxNodes = 1024;    // DENSE_SUBGRAPH_MAX_NODES

// spectral split (runtime/cuts/spectral.py)
inline constexpr int kDenseMaxNodes = 160;             // DENSE_MAX_NODES
inline constexpr int kIterativeMinNodes = 16;          // ITERATIVE_MIN_NODES
inline constexpr int kDenseFallbackMaxNodes = 6000;    // DENSE_FALLBACK_MAX_NODES
inline constexpr double kEigenTol = 1e-5;              // fiedler_vector(tol=1e-5); also FAST_TOL_F32 (same value)
inline constexpr int kLanczosNcv = 24;                 // eigsh(ncv=min(m - 1, 24))
inline constexpr double kSmallGraphTol = 1e-10;        // C++ only: Lanczos in place of dense eigh

// fast cut method (runtime/cuts/nodes.py, runtime/cuts/sparse.py): node solvers
inline constexpr int kBlockSize = 16;                  // BLOCK_SIZE: Ritz vectors handed to the children
inline constexpr int kRandomColumns = 4;               // RANDOM_COLUMNS: recycled columns = block - 4
inline constexpr int kLanczosMaxSteps = 300;           // LANCZOS_MAX_STEPS
inline constexpr int kLanczosCheck = 4;                // LANCZOS_CHECK: residual checked every 4 steps
inline constexpr double kShiftInvertSigma = 1e-9;      // SHIFT_INVERT_SIGMA: L + sigma I
inline constexpr double kShiftInvertTol = 1e-8;        // SHIFT_INVERT_TOL: relative Ritz residual
inline constexpr int kShiftInvertMaxSteps = 60;        // SHIFT_INVERT_MAX_STEPS: solves before the fallback
inline constexpr int kShiftInvertCheck = 2;            // C++ only: sparse.py passes check=2 to lanczos_fiedler
inline constexpr double kShiftInvertBandedMaxEntries = 8388608;  // SHIFT_INVERT_BANDED_MAX_ENTRIES (1 << 23)

// transition matrices (runtime/cuts/graph.py)
inline constexpr double kRowTol = 1e-2;                // check_transition_matrix(row_tol)
inline constexpr double kStationaryTol = 1e-9;         // stationary_distribution(tol)
inline constexpr int kStationaryPowerIter = 10;        // stationary_distribution(max_power_iter)
inline constexpr int kStationaryDenseMax = 32;         // n <= 32: dense eig
inline constexpr int kStationaryNcv = 16;              // eigs(ncv=min(n - 1, 16))

// runtime/segmenter.py
inline constexpr int kMaxSourceSide = 2048;            // Segmenter(max_source_side)
inline constexpr int kMaxLabelSide = 4096;             // Segmenter(max_label_side)

// pixel source (runtime/sources/pixels.py)
inline constexpr int kGrid = 32;                       // PixelSource.grid
inline constexpr int kMinGrid = 4;                     // accepted range of R
inline constexpr int kMaxGrid = 256;
inline constexpr double kMinRadius = 1.5;              // max(1.5, 3 * grid / 32)
inline constexpr double kRadiusPer32 = 3.0;
inline constexpr double kColorScale = 1.0;             // PixelSource.color_scale
inline constexpr double kMinSigmaColor = 1.0;          // max(median, 1.0)
inline constexpr double kPixelSelfLoop = 1.0;          // W + identity: a cell is fully similar to itself
// Not mirrored: the intervening-contour term. Python's default is CONTOUR_SCALE = 2.0 (since issue 12,
// "Quality v0.3"); this demo computes the graph without it, i.e. PixelSource(contour_scale=None), and
// tests/test_cpp_demo.py compares it with that setting.
inline constexpr double kContourScale = 0.0;           // C++ only: 0 = no contour term (Python default 2.0)

// runtime/upsample.py
inline constexpr double kUpsampleSigmaColor = 0.1;     // upsample_labels(sigma_color)
inline constexpr double kUpsampleSpatialDenom = 0.5;   // exp(-dist^2 / 0.5)

// runtime/draw.py
inline constexpr double kOverlayAlpha = 0.45;
inline constexpr double kBoundaryPixelsPer = 400.0;    // thick = max(1, round(max(H, W) / 400))

// model contract (runtime/sources/contract.py, engine.py)
inline constexpr const char* kMetadataKey = "walkcut.contract";
inline constexpr int kContractVersion = 2;  // version 1 (walkcut 0.2 exports) is still read
inline constexpr int kMaxAttnRes = 96;
inline constexpr const char* kInputName = "image";
inline constexpr const char* kOutputName = "attention";

}  // namespace walkcut::defaults
