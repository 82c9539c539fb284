// Image side of the pipeline: the weight-free pixels source (runtime/sources/pixels.py), label
// upsampling (runtime/upsample.py), drawing (runtime/draw.py), model input (runtime/sources/preprocess.py).
#pragma once

#include <opencv2/core.hpp>

#include <optional>
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

// s: the edge raster has s x s pixels per grid cell, s = max(4, ceil(256 / grid)).
int edge_raster_scale(int grid);

// Colour edge strength on a (grid * s, grid * s) CV_32F raster (runtime/sources/pixels.py edge_map):
// area resize, CIE Lab, Gaussian blur (sigma 1 px), Scharr derivatives; the norm of the six Lab
// derivatives.
cv::Mat edge_map(const cv::Mat& image_rgb, int grid);

struct PixelSource {
  int grid = defaults::kGrid;
  double radius = -1.0;  // <= 0: max(1.5, 3 * grid / 32)
  double color_scale = defaults::kColorScale;
  // Intervening-contour term exp(-e_ij^2 / (2 sigma_e^2)), e_ij the strongest edge on the line
  // between the two cell centres, sigma_e = contour_scale x the median e_ij of 8-neighbour pairs.
  // std::nullopt leaves the term out (Python: contour_scale=None).
  std::optional<double> contour_scale = defaults::kContourScale;
  double effective_radius() const;
  void validate() const;  // throws std::invalid_argument naming the bad value
  Transition transition(const cv::Mat& image_rgb) const;  // (H, W) CV_8UC3 RGB
};

// Grid labels (R x R, row-major) -> (H, W) CV_32S pixel labels, renumbered 0..K-1 in order (a segment
// may vanish when upsampled). method: joint-bilateral (votes over the 2 x 2 nearest cells, weighted by
// distance and colour similarity to each cell's mean colour) or nearest (plain blocks); snap is
// joint-bilateral here, as in runtime/upsample.py: the snapping itself needs a fine segmentation of
// the image (Pipeline::segment makes it and calls snap_to_segments).
cv::Mat upsample_labels(const std::vector<int>& grid_labels, int grid, const cv::Mat& image_rgb,
                        const cv::Mat& cell_colors, const std::string& method = "joint-bilateral");

// upsample = "snap" (runtime/upsample.py snap_to_segments): each segment of `segments` takes the label
// that most of its pixels have in `labels` (ties to the smaller label), so a coarse segmentation keeps
// its regions but moves its boundaries onto those of the finer one. Both (H, W) CV_32S maps of the
// same image with labels >= 0; the result is renumbered 0..K-1 keeping order (a label may vanish),
// as the Python Segmenter does after snapping.
cv::Mat snap_to_segments(const cv::Mat& labels, const cv::Mat& segments);

cv::Mat palette(int n);                                            // (n, 1) CV_8UC3 RGB
cv::Mat overlay(const cv::Mat& image_rgb, const cv::Mat& labels);  // RGB uint8

// (1, 3, S, S) float blob: whole image squashed to S x S (area when shrinking, bilinear otherwise),
// channel order and pixel scaling as the contract says: minus_one_to_one (x / 127.5 - 1), imagenet
// ((x / 255 - mean) / std, defaults::kImagenetMean / kImagenetStd) or zero_to_one (x / 255).
cv::Mat preprocess(const cv::Mat& image_rgb, int image_size, bool bgr,
                   const std::string& normalization = "minus_one_to_one");

}  // namespace walkcut
