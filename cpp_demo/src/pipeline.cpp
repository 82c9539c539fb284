#include <opencv2/imgproc.hpp>

#include <chrono>
#include <cmath>
#include <stdexcept>

#include "walkcut/pipeline.hpp"

namespace walkcut {
namespace {
// The image area-averaged to at most max_side pixels on its longest side (or itself): the source
// needs only R x R colours or an S x S input, and huge photos would cost gigabytes of copies.
cv::Mat shrink(const cv::Mat& image, int max_side) {
  const int side = std::max(image.rows, image.cols);
  if (side <= max_side) return image;
  const double scale = static_cast<double>(max_side) / side;
  // Python's round() is round-half-even, as nearbyint in the default rounding mode.
  const int w = std::max(1, static_cast<int>(std::nearbyint(image.cols * scale)));
  const int h = std::max(1, static_cast<int>(std::nearbyint(image.rows * scale)));
  cv::Mat out;
  cv::resize(image, out, cv::Size(w, h), 0, 0, cv::INTER_AREA);
  return out;
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

Pipeline::Pipeline(PipelineOptions options) : opt_(std::move(options)) {
  opt_.cuts.validate();
  if (!opt_.model.empty()) {
    contract_ = read_contract(opt_.model);  // refuses a model it cannot honour before loading it
    backend_ = create_backend(opt_.model, opt_.backend, *contract_);
  }
}

std::string Pipeline::source_name() const { return backend_ ? backend_->name() : "pixels"; }

Segmentation Pipeline::segment(const cv::Mat& image_rgb) {
  if (image_rgb.empty() || image_rgb.type() != CV_8UC3)
    throw std::invalid_argument("segment() expects a non-empty (H, W) CV_8UC3 RGB image");
  Segmentation out;
  auto t0 = std::chrono::steady_clock::now();
  Transition tr;
  const cv::Mat small = shrink(image_rgb, defaults::kMaxSourceSide);
  if (backend_) {
    const cv::Mat blob = preprocess(small, contract_->image_size, contract_->color_order == "BGR");
    out.timings.preprocess_ms = ms_since(t0);
    t0 = std::chrono::steady_clock::now();
    tr.P_dense = backend_->run(blob);
    tr.grid = contract_->attn_res;
    tr.cell_colors = grid_cell_colors(small, tr.grid);
  } else {
    tr = PixelSource{opt_.grid}.transition(small);
  }
  out.timings.source_ms = ms_since(t0);
  t0 = std::chrono::steady_clock::now();
  const CutResult cut = tr.sparse ? cut_transition_matrix(tr.P, opt_.cuts, tr.stationary)
                                  : cut_transition_matrix(tr.P_dense, opt_.cuts, tr.stationary);
  out.timings.cuts_ms = ms_since(t0);
  t0 = std::chrono::steady_clock::now();
  out.grid = tr.grid;
  out.grid_labels = cut.labels;
  // Boundary-aware upsampling at most at kMaxLabelSide, then nearest neighbour: bounded time/memory.
  const cv::Mat guide = shrink(image_rgb, defaults::kMaxLabelSide);
  out.labels = upsample_labels(cut.labels, tr.grid, guide, tr.cell_colors);
  if (guide.size() != image_rgb.size())
    cv::resize(out.labels, out.labels, image_rgb.size(), 0, 0, cv::INTER_NEAREST);
  double maxv = 0;
  cv::minMaxLoc(out.labels, nullptr, &maxv);
  out.n_segments = static_cast<int>(maxv) + 1;
  out.timings.upsample_ms = ms_since(t0);
  return out;
}

}  // namespace walkcut
