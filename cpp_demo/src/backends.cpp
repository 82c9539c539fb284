// Backend selection and the OpenCV DNN backend (the others live in backend_ort.cpp and
// backend_trt.cpp, compiled only with their SDKs).
#include <algorithm>
#include <filesystem>
#include <iostream>
#include <stdexcept>

#include "walkcut/backend.hpp"
#include "walkcut/defaults.hpp"

#ifdef WALKCUT_HAVE_OPENCV_DNN
#include <opencv2/dnn.hpp>
#endif

namespace walkcut {

Dense attention_from_floats(const float* data, long rows, long cols, const Contract& c) {
  if (rows != c.n_nodes() || cols != c.n_nodes())
    throw std::runtime_error(c.source + ": the engine returned a " + std::to_string(rows) + " x " +
                             std::to_string(cols) + " attention matrix, but its contract promises " +
                             std::to_string(c.n_nodes()) + " x " + std::to_string(c.n_nodes()) + "; re-export the model");
  // Row-major floats -> column-major doubles.
  return Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(data, rows, cols)
      .cast<double>();
}

std::vector<std::string> compiled_backends() {
  std::vector<std::string> out;
#ifdef WALKCUT_HAVE_TENSORRT
  out.push_back("trt");
#endif
#ifdef WALKCUT_HAVE_ORT
  out.push_back("ort");
#endif
#ifdef WALKCUT_HAVE_OPENCV_DNN
  out.push_back("opencv-dnn");
#endif
  return out;
}

#ifdef WALKCUT_HAVE_OPENCV_DNN
namespace {
class OpenCvDnnBackend : public AttentionBackend {
 public:
  OpenCvDnnBackend(const std::string& path, const Contract& c) : contract_(c) {
    try {
      net_ = cv::dnn::readNetFromONNX(path);
    } catch (const cv::Exception& e) {
      throw std::runtime_error(path + ": OpenCV DNN cannot load this graph (" + e.err +
                               "); use --backend ort or trt");
    }
    if (net_.empty()) throw std::runtime_error(path + ": OpenCV DNN loaded an empty network");
    std::cerr << "walkcut_demo: warning: OpenCV DNN output is not verified against ONNX Runtime (OpenCV 4.6 "
                 "differs on MatMul/Softmax graphs); prefer --backend ort or trt\n";
  }
  std::string name() const override { return "opencv-dnn"; }
  Dense run(const cv::Mat& blob) override {
    cv::Mat out;
    try {
      net_.setInput(blob, defaults::kInputName);
      out = net_.forward(defaults::kOutputName);
    } catch (const cv::Exception& e) {
      throw std::runtime_error(contract_.source + ": OpenCV DNN failed to run the graph (" + e.err + ")");
    }
    // (1, n, n) -> (n, n)
    const long n = out.dims == 3 ? out.size[1] : out.rows, m = out.dims == 3 ? out.size[2] : out.cols;
    cv::Mat f;
    out.convertTo(f, CV_32F);
    return attention_from_floats(f.ptr<float>(), n, m, contract_);
  }

 private:
  Contract contract_;
  cv::dnn::Net net_;
};
}  // namespace

std::unique_ptr<AttentionBackend> make_opencv_dnn_backend(const std::string& path, const Contract& c) {
  return std::make_unique<OpenCvDnnBackend>(path, c);
}
#endif

std::unique_ptr<AttentionBackend> create_backend(const std::string& path, const std::string& name,
                                                 const Contract& c) {
  const std::string ext = std::filesystem::path(path).extension().string();
  const bool engine = ext == ".engine" || ext == ".plan";
  std::string pick = name;
  if (pick == "auto") {
    const auto have = compiled_backends();
    auto has = [&](const char* b) { return std::find(have.begin(), have.end(), b) != have.end(); };
    // OpenCV DNN is never picked automatically: it cannot run the exported attention graph
    // (OpenCV 4.6 lacks LayerNormalization; 5.0 fails on its Transpose), only simpler graphs.
    if (engine) pick = "trt";
    else if (has("ort")) pick = "ort";
    else throw std::runtime_error("no backend that runs the exported attention graph was compiled into this build; "
                                  "rebuild with -DWALKCUT_WITH_ORT=ON -DONNXRUNTIME_ROOT=... (or pass --backend "
                                  "opencv-dnn for simple graphs), or drop --model to use the pixels source");
  }
  if (engine && pick != "trt")
    throw std::runtime_error(path + ": a TensorRT engine needs --backend trt");
  if (pick == "trt") {
#ifdef WALKCUT_HAVE_TENSORRT
    return make_trt_backend(path, c);
#else
    throw std::runtime_error("backend 'trt' was not compiled into this build; rebuild with "
                             "-DWALKCUT_WITH_TENSORRT=ON -DTENSORRT_ROOT=/path/to/TensorRT (needs CUDA)");
#endif
  }
  if (pick == "ort") {
#ifdef WALKCUT_HAVE_ORT
    return make_ort_backend(path, c);
#else
    throw std::runtime_error("backend 'ort' was not compiled into this build; rebuild with "
                             "-DWALKCUT_WITH_ORT=ON -DONNXRUNTIME_ROOT=/path/to/onnxruntime (the C++ release archive)");
#endif
  }
  if (pick == "opencv-dnn") {
#ifdef WALKCUT_HAVE_OPENCV_DNN
    return make_opencv_dnn_backend(path, c);
#else
    throw std::runtime_error("backend 'opencv-dnn' was not compiled into this build (OpenCV without the dnn module)");
#endif
  }
  throw std::invalid_argument("unknown backend '" + name + "' (expected auto, ort, trt or opencv-dnn)");
}

}  // namespace walkcut
