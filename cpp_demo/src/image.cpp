// Joint-bilateral upsampling, overlay drawing and model input (the pixels source is in pixels.cpp).
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <stdexcept>
#include <string>

#include "walkcut/image.hpp"

namespace walkcut {

namespace {
// Renumber 0..K-1 keeping the order of the labels that survived (a segment may vanish when upsampled).
void renumber(cv::Mat& labels) {
  std::map<int, int> ids;
  for (int y = 0; y < labels.rows; ++y)
    for (int x = 0; x < labels.cols; ++x) ids.emplace(labels.at<int>(y, x), 0);
  int next = 0;
  for (auto& kv : ids) kv.second = next++;
  for (int y = 0; y < labels.rows; ++y)
    for (int x = 0; x < labels.cols; ++x) labels.at<int>(y, x) = ids[labels.at<int>(y, x)];
}
}  // namespace

cv::Mat upsample_labels(const std::vector<int>& grid_labels, int grid, const cv::Mat& image_rgb,
                        const cv::Mat& cell_colors, const std::string& method) {
  if (method != "joint-bilateral" && method != "nearest" && method != "snap")
    throw std::invalid_argument("upsample method must be joint-bilateral, nearest or snap, got '" + method + "'");
  if (static_cast<long>(grid_labels.size()) != static_cast<long>(grid) * grid)
    throw std::invalid_argument("grid_labels must hold grid * grid labels");
  const int H = image_rgb.rows, Wd = image_rgb.cols, R = grid;
  if (method == "nearest") {  // plain blocks, as cv2.resize(..., INTER_NEAREST) in runtime/upsample.py
    cv::Mat out;
    cv::resize(cv::Mat(R, R, CV_32S, const_cast<int*>(grid_labels.data())), out, cv::Size(Wd, H), 0, 0,
               cv::INTER_NEAREST);
    renumber(out);
    return out;
  }
  const double inv2s2 = 1.0 / (2 * defaults::kUpsampleSigmaColor * defaults::kUpsampleSigmaColor);
  cv::Mat out(H, Wd, CV_32S);
  // Horizontal candidates and spatial weights depend on x only.
  std::vector<int> cx(2 * Wd);
  std::vector<double> wx(2 * Wd);
  for (int x = 0; x < Wd; ++x) {
    const double gx = (x + 0.5) * R / Wd;
    const int c0 = static_cast<int>(std::floor(gx - 0.5));
    for (int o = 0; o < 2; ++o) {
      const int c = std::clamp(c0 + o, 0, R - 1);
      cx[2 * x + o] = c;
      wx[2 * x + o] = std::exp(-(gx - (c + 0.5)) * (gx - (c + 0.5)) / defaults::kUpsampleSpatialDenom);
    }
  }
  for (int y = 0; y < H; ++y) {
    const double gy = (y + 0.5) * R / H;
    const int c0 = static_cast<int>(std::floor(gy - 0.5));
    int cy[2];
    double wy[2];
    for (int o = 0; o < 2; ++o) {
      cy[o] = std::clamp(c0 + o, 0, R - 1);
      wy[o] = std::exp(-(gy - (cy[o] + 0.5)) * (gy - (cy[o] + 0.5)) / defaults::kUpsampleSpatialDenom);
    }
    const cv::Vec3b* row = image_rgb.ptr<cv::Vec3b>(y);
    int* dst = out.ptr<int>(y);
    for (int x = 0; x < Wd; ++x) {
      int lab[4];
      float w[4];
      for (int oy = 0; oy < 2; ++oy)
        for (int ox = 0; ox < 2; ++ox) {
          const int k = 2 * oy + ox, gxc = cx[2 * x + ox];
          const cv::Vec3f& col = cell_colors.at<cv::Vec3f>(cy[oy], gxc);
          float dc = 0.f;
          for (int ch = 0; ch < 3; ++ch) {
            const float diff = row[x][ch] / 255.0f - col[ch];
            dc += diff * diff;
          }
          w[k] = static_cast<float>(wy[oy] * wx[2 * x + ox] * std::exp(-dc * inv2s2));
          lab[k] = grid_labels[cy[oy] * R + gxc];
        }
      // A label's score is the summed weight of the candidates carrying it; first best wins.
      int best = 0;
      float best_score = -1.f;
      for (int a = 0; a < 4; ++a) {
        float s = 0.f;
        for (int b = 0; b < 4; ++b) s += lab[b] == lab[a] ? w[b] : 0.f;
        if (s > best_score) best_score = s, best = a;
      }
      dst[x] = lab[best];
    }
  }
  renumber(out);
  return out;
}

cv::Mat snap_to_segments(const cv::Mat& labels, const cv::Mat& segments) {
  if (labels.type() != CV_32S || segments.type() != CV_32S || labels.size() != segments.size() || labels.empty())
    throw std::invalid_argument("snap_to_segments expects two non-empty (H, W) CV_32S maps of the same size");
  double lab_max = 0, seg_max = 0, lab_min = 0, seg_min = 0;
  cv::minMaxLoc(labels, &lab_min, &lab_max);
  cv::minMaxLoc(segments, &seg_min, &seg_max);
  if (lab_min < 0 || seg_min < 0) throw std::invalid_argument("snap_to_segments expects labels >= 0");
  const size_t k_lab = static_cast<size_t>(lab_max) + 1, k_seg = static_cast<size_t>(seg_max) + 1;
  std::vector<long> votes(k_seg * k_lab, 0);  // (segments, labels)
  for (int y = 0; y < labels.rows; ++y) {
    const int* lab = labels.ptr<int>(y);
    const int* seg = segments.ptr<int>(y);
    for (int x = 0; x < labels.cols; ++x) ++votes[static_cast<size_t>(seg[x]) * k_lab + lab[x]];
  }
  std::vector<int> winner(k_seg, 0);  // argmax over the labels: the first (smallest) of the best wins
  for (size_t s = 0; s < k_seg; ++s) {
    const long* row = votes.data() + s * k_lab;
    winner[s] = static_cast<int>(std::max_element(row, row + k_lab) - row);
  }
  cv::Mat out(labels.size(), CV_32S);
  for (int y = 0; y < out.rows; ++y) {
    const int* seg = segments.ptr<int>(y);
    int* dst = out.ptr<int>(y);
    for (int x = 0; x < out.cols; ++x) dst[x] = winner[seg[x]];
  }
  renumber(out);
  return out;
}

cv::Mat palette(int n) {
  // Hues step by the golden angle so neighbouring ids never get similar colours.
  const int m = std::max(n, 1);
  cv::Mat hsv(1, m, CV_8UC3), rgb;
  for (int k = 0; k < m; ++k) {
    const double hue = std::fmod(k * 0.618033988749895, 1.0);
    const double sat = 0.65 + 0.35 * std::fmod(k * 0.37, 1.0);
    hsv.at<cv::Vec3b>(0, k) = cv::Vec3b(static_cast<uchar>(hue * 180), static_cast<uchar>(sat * 255), 235);
  }
  cv::cvtColor(hsv, rgb, cv::COLOR_HSV2RGB);
  return rgb.reshape(3, m);
}

cv::Mat overlay(const cv::Mat& image_rgb, const cv::Mat& labels) {
  double maxv = 0;
  cv::minMaxLoc(labels, nullptr, &maxv);
  const cv::Mat colors = palette(static_cast<int>(maxv) + 1);
  cv::Mat tint(labels.size(), CV_8UC3), out;
  for (int y = 0; y < labels.rows; ++y)
    for (int x = 0; x < labels.cols; ++x)
      tint.at<cv::Vec3b>(y, x) = colors.at<cv::Vec3b>(labels.at<int>(y, x) % colors.rows, 0);
  const double alpha = defaults::kOverlayAlpha;
  cv::addWeighted(image_rgb, 1.0 - alpha, tint, alpha, 0.0, out);
  cv::Mat edge = cv::Mat::zeros(labels.size(), CV_8U);
  for (int y = 0; y < labels.rows; ++y)
    for (int x = 0; x < labels.cols; ++x) {
      const int l = labels.at<int>(y, x);
      if ((x + 1 < labels.cols && labels.at<int>(y, x + 1) != l) || (y + 1 < labels.rows && labels.at<int>(y + 1, x) != l))
        edge.at<uchar>(y, x) = 1;
    }
  const int thick = std::max(1, static_cast<int>(std::nearbyint(std::max(labels.rows, labels.cols) / defaults::kBoundaryPixelsPer)));
  if (thick > 1) cv::dilate(edge, edge, cv::Mat::ones(thick, thick, CV_8U));
  out.setTo(cv::Scalar(255, 255, 255), edge);
  return out;
}

cv::Mat preprocess(const cv::Mat& image_rgb, int S, bool bgr, const std::string& normalization) {
  if (image_rgb.empty() || image_rgb.type() != CV_8UC3)
    throw std::invalid_argument("preprocess expects a non-empty (H, W) CV_8UC3 RGB image");
  // normalised = x * scale - shift per channel, in float32 as runtime/sources/preprocess.py computes it
  // (this file is compiled without fused multiply-adds, so the rounding is the same).
  float scale[3], shift[3];
  for (int c = 0; c < 3; ++c) {
    if (normalization == "minus_one_to_one") {  // x / 127.5 - 1
      scale[c] = static_cast<float>(1.0 / 127.5), shift[c] = 1.0f;
    } else if (normalization == "imagenet") {  // (x / 255 - mean) / std
      scale[c] = static_cast<float>(1.0 / (255.0 * defaults::kImagenetStd[c]));
      shift[c] = static_cast<float>(defaults::kImagenetMean[c] / defaults::kImagenetStd[c]);
    } else if (normalization == "zero_to_one") {  // x / 255
      scale[c] = static_cast<float>(1.0 / 255.0), shift[c] = 0.0f;
    } else {
      throw std::invalid_argument("unknown normalization '" + normalization +
                                  "' (expected minus_one_to_one, imagenet or zero_to_one)");
    }
  }
  cv::Mat x = image_rgb;
  if (image_rgb.rows != S || image_rgb.cols != S) {
    const bool shrink = static_cast<long>(image_rgb.rows) * image_rgb.cols >= static_cast<long>(S) * S;
    cv::resize(image_rgb, x, cv::Size(S, S), 0, 0, shrink ? cv::INTER_AREA : cv::INTER_LINEAR);
  }
  if (bgr) cv::cvtColor(x, x, cv::COLOR_RGB2BGR);
  const int shape[4] = {1, 3, S, S};
  cv::Mat blob(4, shape, CV_32F);
  for (int c = 0; c < 3; ++c) {
    float* dst = blob.ptr<float>(0, c);
    for (int y = 0; y < S; ++y) {
      const uchar* row = x.ptr<uchar>(y);
      for (int i = 0; i < S; ++i) dst[y * S + i] = static_cast<float>(row[3 * i + c]) * scale[c] - shift[c];
    }
  }
  return blob;
}

}  // namespace walkcut
