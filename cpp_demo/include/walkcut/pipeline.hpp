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
  // Pixels source only: intervening-contour scale (std::nullopt: no contour term).
  std::optional<double> contour_scale = defaults::kContourScale;
  // Where a cut setting comes from, lowest first: `cuts` / `upsample` below (the package defaults
  // unless changed), the model contract's cut_defaults (overwrites those it names), then `given`
  // (what the user chose explicitly: command-line flags, node parameters), which always wins.
  CutOptions cuts;
  std::string upsample = "joint-bilateral";  // joint-bilateral | nearest | snap (defaults::kUpsampleMethods)
  CutSettings given;
  bool model_cut_defaults = true;  // false: ignore the contract's cut_defaults
};

class Pipeline {
 public:
  explicit Pipeline(PipelineOptions options);  // loads and checks the model once
  Segmentation segment(const cv::Mat& image_rgb);  // (H, W) CV_8UC3 RGB
  // The random walk segment() cuts: the pixels graph or the engine's attention (fills the
  // preprocess / source times when `timings` is given).
  Transition transition(const cv::Mat& image_rgb, Timings* timings = nullptr);
  // The engine's input for an image, (1, 3, S, S) float32 as the contract asks (what segment() feeds
  // the engine). Throws std::logic_error for the pixels source, which has no model input.
  cv::Mat model_input(const cv::Mat& image_rgb) const;
  std::string source_name() const;
  const std::optional<Contract>& contract() const { return contract_; }
  // The cut settings in force after the model's cut_defaults and the given ones were applied.
  const CutOptions& cuts() const { return cuts_; }
  const std::string& upsample() const { return upsample_; }
  // One line naming each cut setting and where it came from (default / model / given).
  std::string describe_cuts() const;

 private:
  PipelineOptions opt_;
  std::optional<Contract> contract_;
  std::unique_ptr<AttentionBackend> backend_;
  CutOptions cuts_;
  std::string upsample_;
};

}  // namespace walkcut
