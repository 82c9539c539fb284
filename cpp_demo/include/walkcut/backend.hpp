// Attention engines behind one interface. Each backend is compiled only when its SDK was found by
// CMake (WALKCUT_HAVE_ORT, WALKCUT_HAVE_TENSORRT, WALKCUT_HAVE_OPENCV_DNN).
#pragma once

#include <opencv2/core.hpp>

#include <memory>
#include <string>
#include <vector>

#include "walkcut/contract.hpp"
#include "walkcut/cuts.hpp"

namespace walkcut {

class AttentionBackend {
 public:
  virtual ~AttentionBackend() = default;
  virtual std::string name() const = 0;
  // blob: (1, 3, S, S) float32 from preprocess(); returns the (R*R, R*R) transition matrix.
  virtual Dense run(const cv::Mat& blob) = 0;
};

// Names compiled into this build, in the order `auto` tries them.
std::vector<std::string> compiled_backends();

// `name`: auto | ort | trt | opencv-dnn. A requested backend that was not compiled raises with the
// CMake option that enables it; `auto` picks trt for engines, else ort (never opencv-dnn, which
// cannot run the exported attention graph).
std::unique_ptr<AttentionBackend> create_backend(const std::string& model_path, const std::string& name,
                                                 const Contract& contract);

// Engine output (n, n) floats -> Dense, with the shape checked against the contract.
Dense attention_from_floats(const float* data, long rows, long cols, const Contract& contract);

#ifdef WALKCUT_HAVE_ORT
std::unique_ptr<AttentionBackend> make_ort_backend(const std::string& path, const Contract& c);
#endif
#ifdef WALKCUT_HAVE_TENSORRT
std::unique_ptr<AttentionBackend> make_trt_backend(const std::string& path, const Contract& c);
#endif
#ifdef WALKCUT_HAVE_OPENCV_DNN
std::unique_ptr<AttentionBackend> make_opencv_dnn_backend(const std::string& path, const Contract& c);
#endif

}  // namespace walkcut
