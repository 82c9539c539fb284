// Pixels source, joint-bilateral upsampling, overlay drawing and model input.
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <stdexcept>

#include "walkcut/image.hpp"

namespace walkcut {

cv::Mat grid_cell_colors(const cv::Mat& image_rgb, int grid) {
  cv::Mat f, out;
  image_rgb.convertTo(f, CV_32FC3, 1.0 / 255.0);
  cv::resize(f, out, cv::Size(grid, grid), 0, 0, cv::INTER_AREA);
  return out;
}

double PixelSource::effective_radius() const {
  return radius > 0 ? radius : std::max(defaults::kMinRadius, defaults::kRadiusPer32 * grid / 32.0);
}

Transition PixelSource::transition(const cv::Mat& image_rgb) const {
  if (grid < defaults::kMinGrid || grid > defaults::kMaxGrid)
    throw std::invalid_argument("grid must be an integer in [" + std::to_string(defaults::kMinGrid) + ", " +
                                std::to_string(defaults::kMaxGrid) + "], got " + std::to_string(grid));
  if (image_rgb.type() != CV_8UC3) throw std::invalid_argument("expected an (H, W, 3) uint8 RGB image");
  const int R = grid, n = R * R;
  Transition tr;
  tr.grid = R;
  tr.sparse = true;
  tr.cell_colors = grid_cell_colors(image_rgb, R);
  cv::Mat lab_mat;
  cv::cvtColor(tr.cell_colors, lab_mat, cv::COLOR_RGB2Lab);
  std::vector<double> lab(3 * n);
  for (int i = 0; i < n; ++i) {
    const auto& c = lab_mat.at<cv::Vec3f>(i / R, i % R);
    for (int k = 0; k < 3; ++k) lab[3 * i + k] = c[k];
  }
  const double rad = effective_radius();
  const int r = static_cast<int>(std::floor(rad));
  struct Edge { int i, j; double dist2, cdist2; };
  std::vector<Edge> edges;
  std::vector<double> near;  // colour distances of 8-neighbour pairs: they set the colour scale
  for (int dy = -r; dy <= r; ++dy)
    for (int dx = -r; dx <= r; ++dx) {
      if ((dy == 0 && dx == 0) || dy * dy + dx * dx > rad * rad) continue;
      for (int i = 0; i < n; ++i) {
        const int ny = i / R + dy, nx = i % R + dx;
        if (ny < 0 || ny >= R || nx < 0 || nx >= R) continue;
        const int j = ny * R + nx;
        double c2 = 0.0;
        for (int k = 0; k < 3; ++k) c2 += (lab[3 * i + k] - lab[3 * j + k]) * (lab[3 * i + k] - lab[3 * j + k]);
        const double d2 = dy * dy + dx * dx;
        edges.push_back({i, j, d2, c2});
        if (d2 <= 2.0) near.push_back(std::sqrt(c2));
      }
    }
  // Median as numpy computes it (mean of the two middle values for an even count).
  std::sort(near.begin(), near.end());
  const size_t h = near.size() / 2;
  const double median = near.empty() ? 0.0 : (near.size() % 2 ? near[h] : 0.5 * (near[h - 1] + near[h]));
  const double sigma_c = color_scale * std::max(median, defaults::kMinSigmaColor);
  const double sigma_x = rad / 2.0;
  std::vector<Eigen::Triplet<double>> trip;
  trip.reserve(edges.size());
  for (const auto& e : edges)
    trip.emplace_back(e.i, e.j,
                      std::exp(-e.cdist2 / (2 * sigma_c * sigma_c) - e.dist2 / (2 * sigma_x * sigma_x)));
  Sparse W(n, n);
  W.setFromTriplets(trip.begin(), trip.end());
  // Exact symmetry despite rounding; the self-loop keeps every degree positive even where all
  // neighbour weights underflow, so P = D^-1 W always exists.
  Sparse I(n, n);
  I.setIdentity();
  W = (W + Sparse(W.transpose())) * 0.5 + I * defaults::kPixelSelfLoop;
  const Vector d = W * Vector::Ones(n);
  tr.P = Sparse(d.cwiseInverse().asDiagonal() * W);
  tr.stationary = d / d.sum();
  return tr;
}

cv::Mat upsample_labels(const std::vector<int>& grid_labels, int grid, const cv::Mat& image_rgb,
                        const cv::Mat& cell_colors) {
  const int H = image_rgb.rows, Wd = image_rgb.cols, R = grid;
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
  // Renumber 0..K-1 keeping the order of the labels that survived.
  std::map<int, int> ids;
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < Wd; ++x) ids.emplace(out.at<int>(y, x), 0);
  int next = 0;
  for (auto& kv : ids) kv.second = next++;
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < Wd; ++x) out.at<int>(y, x) = ids[out.at<int>(y, x)];
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

cv::Mat preprocess(const cv::Mat& image_rgb, int S, bool bgr) {
  cv::Mat x = image_rgb;
  if (image_rgb.rows != S || image_rgb.cols != S) {
    const bool shrink = static_cast<long>(image_rgb.rows) * image_rgb.cols >= static_cast<long>(S) * S;
    cv::resize(image_rgb, x, cv::Size(S, S), 0, 0, shrink ? cv::INTER_AREA : cv::INTER_LINEAR);
  }
  if (bgr) cv::cvtColor(x, x, cv::COLOR_RGB2BGR);
  cv::Mat f;
  x.convertTo(f, CV_32FC3, 1.0 / 127.5, -1.0);
  const int shape[4] = {1, 3, S, S};
  cv::Mat blob(4, shape, CV_32F);
  std::vector<cv::Mat> planes;
  for (int c = 0; c < 3; ++c) planes.emplace_back(S, S, CV_32F, blob.ptr<float>(0, c));
  cv::split(f, planes);
  return blob;
}

}  // namespace walkcut
