// Image side of the pipeline: the weight-free pixels source (runtime/sources/pixels.py), label
// upsampling (runtime/upsample.py), drawing (runtime/draw.py), model input (runtime/sources/preprocess.py).
#pragma once

#include <opencv2/core.hpp>

#include <string>
#include <vector>

#include "walkcut/cuts.hpp"

namespace walkcut {

// A random walk over an R x R grid of patches (row-major nodes).
struct Transition {
  Sparse P;                  // sparse walks (pixels source)
  Dense P_dense;             // dense walks (attention engines); used when `sparse` is false
  bool sparse = false;
  Vector stationary;         // empty when not known in closed form
  int grid = 0;              // R
  cv::Mat cell_colors;       // (R, R) CV_32FC3 RGB in [0, 1]
};

// Mean colour of each of grid x grid cells: INTER_AREA resize of the float RGB image.
cv::Mat grid_cell_colors(const cv::Mat& image_rgb, int grid);

struct PixelSource {
  int grid = defaults::kGrid;
  double radius = -1.0;  // <= 0: max(1.5, 3 * grid / 32)
  double color_scale = defaults::kColorScale;
  double effective_radius() const;
  Transition transition(const cv::Mat& image_rgb) const;  // (H, W) CV_8UC3 RGB
};

// Grid labels (R x R, row-major) -> (H, W) CV_32S pixel labels by joint-bilateral votes over the
// 2 x 2 nearest cells, renumbered 0..K-1 in order (a segment may vanish when upsampled).
cv::Mat upsample_labels(const std::vector<int>& grid_labels, int grid, const cv::Mat& image_rgb,
                        const cv::Mat& cell_colors);

cv::Mat palette(int n);                                            // (n, 1) CV_8UC3 RGB
cv::Mat overlay(const cv::Mat& image_rgb, const cv::Mat& labels);  // RGB uint8

// (1, 3, S, S) float blob: whole image squashed to S x S (area when shrinking, bilinear otherwise),
// channel order as the contract says, x / 127.5 - 1.
cv::Mat preprocess(const cv::Mat& image_rgb, int image_size, bool bgr);

}  // namespace walkcut
