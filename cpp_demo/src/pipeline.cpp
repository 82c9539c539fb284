#include <opencv2/imgproc.hpp>

#include <chrono>
#include <cmath>
#include <sstream>
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

// The fine segmentation upsample = "snap" snaps to (runtime/segmenter.py Segmenter._superpixels): the
// pixels source at kSnapGrid (contour term at its default, whatever the pipeline's own source is) on
// the label guide, cut with threshold kExpandLimit into kSnapSegments leaves (every grown split kept),
// upsampled joint-bilaterally onto the guide. Only the start vectors' seed is the pipeline's.
cv::Mat snap_segments(const cv::Mat& guide, std::uint64_t seed) {
  PixelSource source;
  source.grid = defaults::kSnapGrid;
  const Transition tr = source.transition(shrink(guide, defaults::kMaxSourceSide));
  CutOptions cuts;
  cuts.threshold.kind = Threshold::Kind::kValue;
  cuts.threshold.value = defaults::kExpandLimit;
  cuts.max_segments = defaults::kSnapSegments;
  cuts.seed = seed;
  const CutResult cut = tr.sparse ? cut_transition_matrix(tr.P, cuts, tr.stationary)
                                  : cut_transition_matrix(tr.P_dense, cuts, tr.stationary);
  return upsample_labels(cut.labels, tr.grid, guide, tr.cell_colors, "joint-bilateral");
}

bool known_upsample(const std::string& method) {
  for (const char* m : defaults::kUpsampleMethods)
    if (method == m) return true;
  return false;
}
}  // namespace

Pipeline::Pipeline(PipelineOptions options) : opt_(std::move(options)) {
  if (!opt_.model.empty()) contract_ = read_contract(opt_.model);  // refuses a model it cannot honour
  cuts_ = opt_.cuts;
  upsample_ = opt_.upsample;
  if (contract_ && opt_.model_cut_defaults) contract_->cut_defaults.apply(cuts_, upsample_);
  opt_.given.apply(cuts_, upsample_);
  cuts_.validate();
  if (!known_upsample(upsample_))
    throw std::invalid_argument("upsample must be joint-bilateral, nearest or snap, got '" + upsample_ + "'");
  if (!contract_) {
    PixelSource source;
    source.grid = opt_.grid;
    source.contour_scale = opt_.contour_scale;
    source.validate();  // bad options fail here, not on the first frame
  } else {
    backend_ = create_backend(opt_.model, opt_.backend, *contract_);
  }
}

std::string Pipeline::source_name() const { return backend_ ? backend_->name() : "pixels"; }

std::string Pipeline::describe_cuts() const {
  const CutSettings* model = contract_ && opt_.model_cut_defaults ? &contract_->cut_defaults : nullptr;
  auto from = [&](bool given, bool in_model) { return given ? " (given)" : in_model ? " (model)" : ""; };
  std::ostringstream out;
  out << "mode " << cuts_.mode << from(bool(opt_.given.mode), model && model->mode)
      << ", power " << cuts_.power << from(bool(opt_.given.power), model && model->power)
      << ", threshold " << cuts_.threshold.text() << from(bool(opt_.given.threshold), model && model->threshold)
      << ", max_segments " << cuts_.max_segments << from(bool(opt_.given.max_segments), model && model->max_segments)
      << ", min_size " << (cuts_.min_size < 0 ? std::string("n/") + std::to_string(defaults::kMinSizeDivisor)
                                              : std::to_string(cuts_.min_size))
      << from(bool(opt_.given.min_size), model && model->min_size)
      << ", upsample " << upsample_ << from(bool(opt_.given.upsample), model && model->upsample);
  if (!contract_)
  {
    out << "; contour_scale ";
    if (opt_.contour_scale) out << *opt_.contour_scale;
    else out << "off";
  }
  return out.str();
}

cv::Mat Pipeline::model_input(const cv::Mat& image_rgb) const {
  if (!contract_) throw std::logic_error("model_input() needs a model; the pixels source has no model input");
  if (image_rgb.empty() || image_rgb.type() != CV_8UC3)
    throw std::invalid_argument("model_input() expects a non-empty (H, W) CV_8UC3 RGB image");
  return preprocess(shrink(image_rgb, defaults::kMaxSourceSide), contract_->image_size,
                    contract_->color_order == "BGR", contract_->normalization);
}

Transition Pipeline::transition(const cv::Mat& image_rgb, Timings* timings) {
  if (image_rgb.empty() || image_rgb.type() != CV_8UC3)
    throw std::invalid_argument("expected a non-empty (H, W) CV_8UC3 RGB image");
  auto t0 = std::chrono::steady_clock::now();
  Transition tr;
  const cv::Mat small = shrink(image_rgb, defaults::kMaxSourceSide);
  if (backend_) {
    const cv::Mat blob = preprocess(small, contract_->image_size, contract_->color_order == "BGR",
                                    contract_->normalization);
    if (timings) timings->preprocess_ms = ms_since(t0);
    t0 = std::chrono::steady_clock::now();
    tr.P_dense = backend_->run(blob);
    tr.grid = contract_->attn_res;
    tr.cell_colors = grid_cell_colors(small, tr.grid);
  } else {
    PixelSource source;
    source.grid = opt_.grid;
    source.contour_scale = opt_.contour_scale;
    tr = source.transition(small);
  }
  if (timings) timings->source_ms = ms_since(t0);
  return tr;
}

Segmentation Pipeline::segment(const cv::Mat& image_rgb) {
  if (image_rgb.empty() || image_rgb.type() != CV_8UC3)
    throw std::invalid_argument("segment() expects a non-empty (H, W) CV_8UC3 RGB image");
  Segmentation out;
  const Transition tr = transition(image_rgb, &out.timings);
  auto t0 = std::chrono::steady_clock::now();
  const CutResult cut = tr.sparse ? cut_transition_matrix(tr.P, cuts_, tr.stationary)
                                  : cut_transition_matrix(tr.P_dense, cuts_, tr.stationary);
  out.timings.cuts_ms = ms_since(t0);
  t0 = std::chrono::steady_clock::now();
  out.grid = tr.grid;
  out.grid_labels = cut.labels;
  // Boundary-aware upsampling at most at kMaxLabelSide, then nearest neighbour: bounded time/memory.
  const cv::Mat guide = shrink(image_rgb, defaults::kMaxLabelSide);
  out.labels = upsample_labels(cut.labels, tr.grid, guide, tr.cell_colors, upsample_);
  if (upsample_ == "snap") out.labels = snap_to_segments(out.labels, snap_segments(guide, cuts_.seed));
  if (guide.size() != image_rgb.size())
    cv::resize(out.labels, out.labels, image_rgb.size(), 0, 0, cv::INTER_NEAREST);
  double maxv = 0;
  cv::minMaxLoc(out.labels, nullptr, &maxv);
  out.n_segments = static_cast<int>(maxv) + 1;
  out.timings.upsample_ms = ms_since(t0);
  return out;
}

}  // namespace walkcut
