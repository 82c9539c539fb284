// File I/O for the demo: images with clear errors, .npy matrices, label maps.
#pragma once

#include <opencv2/core.hpp>

#include <string>
#include <vector>

#include "walkcut/cuts.hpp"

namespace walkcut {

// Any image OpenCV decodes, as (H, W) CV_8UC3 RGB (gray replicated, alpha dropped, 16-bit scaled).
cv::Mat read_image_rgb(const std::string& path);
cv::Mat to_rgb8(const cv::Mat& decoded, const std::string& source);  // BGR/BGRA/gray frame -> RGB

// A little-endian float32/float64 .npy array of shape (n, n) or (1, n, n), or (n,) for vectors.
Dense read_npy_matrix(const std::string& path);
Vector read_npy_vector(const std::string& path);
void write_npy_labels(const std::string& path, const std::vector<int>& labels);  // int32 (n,)
// float32/float64 .npy with the Mat's shape (any number of dims; a 2-D Mat gives (rows, cols)).
void write_npy_array(const std::string& path, const cv::Mat& array);

void write_label_png(const std::string& path, const cv::Mat& labels);  // CV_32S -> uint16 PNG
void write_rgb_png(const std::string& path, const cv::Mat& rgb);

}  // namespace walkcut
