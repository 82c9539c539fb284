// One call from an RGB frame to pixel labels: source (engine or pixels) -> cuts -> upsampling.
// This is what an application (the demo, a ROS 2 node) embeds.
#pragma once

#include <opencv2/core.hpp>

#include <memory>
#include <optional>
#include <string>

#include "walkcut/backend.hpp"
#include "walkcut/contract.hpp"
#include "walkcut/cuts.hpp"
#include "walkcut/image.hpp"

namespace walkcut {

struct Timings {
  double preprocess_ms = 0, source_ms = 0, cuts_ms = 0, upsample_ms = 0;
};

struct Segmentation {
  cv::Mat labels;               // (H, W) CV_32S, 0..K-1
  std::vector<int> grid_labels; // (R * R,)
  int grid = 0;
  int n_segments = 0;
  Timings timings;
};

struct PipelineOptions {
  std::string model;            // empty: the pixels source
  std::string backend = "auto"; // auto | ort | trt | opencv-dnn
  int grid = defaults::kGrid;   // pixels source only; engines use the contract's R
  CutOptions cuts;
};

class Pipeline {
 public:
  explicit Pipeline(PipelineOptions options);  // loads and checks the model once
  Segmentation segment(const cv::Mat& image_rgb);  // (H, W) CV_8UC3 RGB
  std::string source_name() const;
  const std::optional<Contract>& contract() const { return contract_; }

 private:
  PipelineOptions opt_;
  std::optional<Contract> contract_;
  std::unique_ptr<AttentionBackend> backend_;
};

}  // namespace walkcut
