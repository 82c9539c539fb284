// ONNX Runtime backend (C++ API). Compiled only with -DWALKCUT_WITH_ORT=ON and an ONNX Runtime
// release archive (headers + libonnxruntime): neither the pip wheel nor Debian ships the headers.
#include <onnxruntime_cxx_api.h>

#include <array>
#include <thread>

#include "walkcut/backend.hpp"
#include "walkcut/defaults.hpp"

namespace walkcut {
namespace {

class OrtBackend : public AttentionBackend {
 public:
  OrtBackend(const std::string& path, const Contract& c) : contract_(c) {
    opts_.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
    opts_.SetIntraOpNumThreads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
    try {
      session_ = std::make_unique<Ort::Session>(env_, path.c_str(), opts_);
    } catch (const Ort::Exception& e) {
      throw std::runtime_error(path + ": ONNX Runtime cannot load the model (" + e.what() + ")");
    }
    // The graph must have the names the contract's GraphIO promises.
    Ort::AllocatorWithDefaultOptions alloc;
    if (session_->GetInputCount() != 1 || session_->GetOutputCount() < 1 ||
        std::string(session_->GetInputNameAllocated(0, alloc).get()) != defaults::kInputName)
      throw std::runtime_error(path + ": expected one input named '" + std::string(defaults::kInputName) +
                               "'; re-export the model");
  }
  std::string name() const override { return "ort"; }
  Dense run(const cv::Mat& blob) override {
    const auto mem = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
    const std::array<int64_t, 4> shape{1, 3, contract_.image_size, contract_.image_size};
    Ort::Value input = Ort::Value::CreateTensor<float>(mem, const_cast<float*>(blob.ptr<float>()), blob.total(),
                                                       shape.data(), shape.size());
    const char* in_names[] = {defaults::kInputName};
    const char* out_names[] = {defaults::kOutputName};
    std::vector<Ort::Value> out;
    try {
      out = session_->Run(Ort::RunOptions{nullptr}, in_names, &input, 1, out_names, 1);
    } catch (const Ort::Exception& e) {
      throw std::runtime_error(contract_.source + ": ONNX Runtime failed to run the model (" + e.what() + ")");
    }
    const auto dims = out[0].GetTensorTypeAndShapeInfo().GetShape();  // (1, n, n)
    if (dims.size() != 3) throw std::runtime_error(contract_.source + ": attention output must be (1, n, n)");
    return attention_from_floats(out[0].GetTensorData<float>(), dims[1], dims[2], contract_);
  }

 private:
  Contract contract_;
  Ort::Env env_{ORT_LOGGING_LEVEL_WARNING, "walkcut"};
  Ort::SessionOptions opts_;
  std::unique_ptr<Ort::Session> session_;
};

}  // namespace

std::unique_ptr<AttentionBackend> make_ort_backend(const std::string& path, const Contract& c) {
  return std::make_unique<OrtBackend>(path, c);
}

}  // namespace walkcut
