// Native TensorRT backend (TensorRT 10 name-based I/O API: setTensorAddress + enqueueV3), for
// Jetson. Compiled only with -DWALKCUT_WITH_TENSORRT=ON; the contract comes from <engine>.json.
#include <NvInfer.h>
#include <cuda_runtime_api.h>

#include <fstream>
#include <iostream>
#include <iterator>

#include "walkcut/backend.hpp"
#include "walkcut/defaults.hpp"

namespace walkcut {
namespace {

void cuda_check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string("CUDA ") + what + ": " + cudaGetErrorString(err));
}

class Logger : public nvinfer1::ILogger {
  void log(Severity severity, const char* msg) noexcept override {
    if (severity <= Severity::kWARNING) std::cerr << "tensorrt: " << msg << "\n";
  }
};

class TrtBackend : public AttentionBackend {
 public:
  TrtBackend(const std::string& path, const Contract& c) : contract_(c) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error(path + ": cannot open the engine file");
    const std::vector<char> data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    runtime_.reset(nvinfer1::createInferRuntime(logger_));
    engine_.reset(runtime_ ? runtime_->deserializeCudaEngine(data.data(), data.size()) : nullptr);
    if (!engine_)
      throw std::runtime_error(path + ": TensorRT could not deserialize the engine (built by another TensorRT "
                               "version or for another GPU? rebuild it on this device with `walkcut export --trt`)");
    for (const char* name : {defaults::kInputName, defaults::kOutputName})
      if (engine_->getTensorDataType(name) != nvinfer1::DataType::kFLOAT)
        throw std::runtime_error(path + ": tensor '" + name + "' is missing or not float32; rebuild the engine");
    context_.reset(engine_->createExecutionContext());
    if (!context_) throw std::runtime_error(path + ": TensorRT could not create an execution context");
    const size_t n = static_cast<size_t>(c.n_nodes());
    in_bytes_ = 3 * sizeof(float) * c.image_size * c.image_size;
    out_.resize(n * n);
    cuda_check(cudaStreamCreate(&stream_), "stream");
    cuda_check(cudaMalloc(&d_in_, in_bytes_), "malloc");
    cuda_check(cudaMalloc(&d_out_, out_.size() * sizeof(float)), "malloc");
    context_->setTensorAddress(defaults::kInputName, d_in_);
    context_->setTensorAddress(defaults::kOutputName, d_out_);
  }
  ~TrtBackend() override {
    cudaFree(d_in_);
    cudaFree(d_out_);
    if (stream_) cudaStreamDestroy(stream_);
  }
  std::string name() const override { return "trt"; }
  Dense run(const cv::Mat& blob) override {
    cuda_check(cudaMemcpyAsync(d_in_, blob.ptr<float>(), in_bytes_, cudaMemcpyHostToDevice, stream_), "copy in");
    if (!context_->enqueueV3(stream_)) throw std::runtime_error(contract_.source + ": TensorRT enqueue failed");
    cuda_check(cudaMemcpyAsync(out_.data(), d_out_, out_.size() * sizeof(float), cudaMemcpyDeviceToHost, stream_),
               "copy out");
    cuda_check(cudaStreamSynchronize(stream_), "sync");
    return attention_from_floats(out_.data(), contract_.n_nodes(), contract_.n_nodes(), contract_);
  }

 private:
  Contract contract_;
  Logger logger_;
  std::unique_ptr<nvinfer1::IRuntime> runtime_;
  std::unique_ptr<nvinfer1::ICudaEngine> engine_;
  std::unique_ptr<nvinfer1::IExecutionContext> context_;
  cudaStream_t stream_ = nullptr;
  void* d_in_ = nullptr;
  void* d_out_ = nullptr;
  size_t in_bytes_ = 0;
  std::vector<float> out_;
};

}  // namespace

std::unique_ptr<AttentionBackend> make_trt_backend(const std::string& path, const Contract& c) {
  return std::make_unique<TrtBackend>(path, c);
}

}  // namespace walkcut
