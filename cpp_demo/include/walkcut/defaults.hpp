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
// Stopping rules (Threshold::parse): auto-ncut and auto-mincut weight each split by the nodes it
// divides (SIZE_WEIGHTED_RULES), auto-ncut-unweighted counts every split once.
inline constexpr const char* kAutoRules[] = {"auto-ncut", "auto-mincut",
                                             "auto-ncut-unweighted"};  // C++ only: hierarchy.AUTO_RULES

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
inline constexpr int kMaxGrid = 128;
inline constexpr double kMinRadius = 1.5;              // max(1.5, 3 * grid / 32)
inline constexpr double kRadiusPer32 = 3.0;
inline constexpr double kColorScale = 1.0;             // PixelSource.color_scale
inline constexpr double kMinSigmaColor = 1.0;          // max(median, 1.0)
inline constexpr double kPixelSelfLoop = 1.0;          // W + identity: a cell is fully similar to itself
// Intervening-contour term (PixelSource.contour_scale; the C++ PixelSource holds it as an optional,
// std::nullopt = off). The raster and floor constants below are runtime/defaults.py's EDGE_* and
// CONTOUR_* (used by pixels.py edge_map, intervening_contours, PixelSource.transition).
inline constexpr double kContourScale = 2.0;           // CONTOUR_SCALE
inline constexpr int kEdgeMinScale = 4;                // s = max(4, ceil(256 / grid)) raster pixels per cell
inline constexpr int kEdgeRasterSide = 256;            // EDGE_RASTER_SIDE
inline constexpr double kEdgeBlurSigma = 1.0;          // Gaussian blur of the Lab raster, pixels
inline constexpr double kContourMargin = 0.25;         // quarter cell left out around each centre
inline constexpr double kContourFloorOfMax = 1e-3;     // sigma_e >= 1e-3 x the strongest edge
inline constexpr double kContourFloor = 1e-6;          // and >= 1e-6 (flat images)

// runtime/upsample.py
inline constexpr double kUpsampleSigmaColor = 0.1;     // upsample_labels(sigma_color)
inline constexpr double kUpsampleSpatialDenom = 0.5;   // exp(-dist^2 / 0.5)
// upsample = "snap": the fine segmentation it snaps to, the pixels source (contour term at its default)
// at this grid cut into this many leaves with threshold kExpandLimit (every grown split kept).
inline constexpr int kSnapGrid = 32;                   // SNAP_GRID
inline constexpr int kSnapSegments = 48;               // SNAP_SEGMENTS

// runtime/draw.py
inline constexpr double kOverlayAlpha = 0.45;
inline constexpr double kBoundaryPixelsPer = 400.0;    // thick = max(1, round(max(H, W) / 400))

// model contract (runtime/sources/contract.py, engine.py)
inline constexpr const char* kMetadataKey = "walkcut.contract";
inline constexpr int kContractVersion = 2;  // version 1 (walkcut 0.2 exports) is still read
inline constexpr int kSupportedContractVersions[] = {1, 2};                      // SUPPORTED_CONTRACT_VERSIONS
inline constexpr const char* kBackbones[] = {"unet", "vit"};                     // BACKBONES
inline constexpr const char* kNormalizations[] = {"minus_one_to_one", "imagenet", "zero_to_one"};  // NORMALIZATIONS
inline constexpr double kImagenetMean[] = {0.485, 0.456, 0.406};                 // IMAGENET_MEAN
inline constexpr double kImagenetStd[] = {0.229, 0.224, 0.225};                  // IMAGENET_STD
inline constexpr const char* kCutDefaultKeys[] = {"mode", "power", "threshold", "min_size", "max_segments",
                                                  "upsample"};                   // CUT_DEFAULT_KEYS
inline constexpr const char* kUpsampleMethods[] = {"joint-bilateral", "nearest",
                                                   "snap"};  // C++ only: upsample.METHODS
inline constexpr int kUnetSizeMultiple = 64;           // C++ only: ModelContract: a UNet's S is a multiple of 64
inline constexpr int kMaxAttnRes = 96;
inline constexpr const char* kInputName = "image";
inline constexpr const char* kOutputName = "attention";

}  // namespace walkcut::defaults
