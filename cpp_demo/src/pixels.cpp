// The weight-free pixels source: runtime/sources/pixels.py in C++ (colour + position affinities
// between the cells of an R x R grid, times the intervening-contour term, plus a self-loop).
//
// Compiled with -ffp-contract=off (CMakeLists.txt): the sampling offsets along a line are rounded
// with rint() after a multiply-add, and a fused multiply-add moves values that sit on .5 to the
// other side, so the samples differ from numpy's. Every other operation here is an elementwise
// IEEE operation in the same order as the Python code, so the graph matches it to rounding.
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "walkcut/image.hpp"

namespace walkcut {
namespace {

// Median as numpy computes it (mean of the two middle values for an even count); 0 when empty.
double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const size_t h = v.size() / 2;
  return v.size() % 2 ? v[h] : (v[h - 1] + v[h]) / 2.0;
}

// Raster offsets (row * side + column) of the samples along the line from a cell centre to the
// centre of the cell (dy, dx) further on: np.linspace(margin, 1 - margin, steps) scaled by the
// offset in raster pixels and rounded half to even, as intervening_contours() in pixels.py.
std::vector<long> line_offsets(int dy, int dx, int s, int side) {
  const int span = std::max(std::abs(dy), std::abs(dx));
  // The quarter cell around each centre is left out: an edge there runs through the cell itself.
  const double margin = defaults::kContourMargin / span;
  const int steps = std::max(2, span * s / 2 + 1);
  const double start = margin, stop = 1.0 - margin, step = (stop - start) / (steps - 1);
  std::vector<long> out(steps);
  for (int k = 0; k < steps; ++k) {
    const double t = k == steps - 1 ? stop : k * step + start;  // numpy sets the endpoint exactly
    const long oy = static_cast<long>(std::nearbyint(t * dy * s));
    const long ox = static_cast<long>(std::nearbyint(t * dx * s));
    out[k] = oy * side + ox;
  }
  return out;
}

}  // namespace

cv::Mat grid_cell_colors(const cv::Mat& image_rgb, int grid) {
  // Averaged in 0..255, then scaled by float32(1 / 255), in this order as pixels.py does: OpenCV's
  // float RGB -> Lab conversion quantises a and b (steps of 1/64 here), so a last-bit difference in a
  // cell colour can move its Lab value by 0.25 and change every weight of that cell.
  cv::Mat f, out;
  image_rgb.convertTo(f, CV_32FC3);
  cv::resize(f, out, cv::Size(grid, grid), 0, 0, cv::INTER_AREA);
  const float scale = static_cast<float>(1.0 / 255.0);
  for (int y = 0; y < out.rows; ++y) {
    float* row = out.ptr<float>(y);
    for (int k = 0; k < 3 * out.cols; ++k) row[k] *= scale;
  }
  return out;
}

int edge_raster_scale(int grid) {
  return std::max(defaults::kEdgeMinScale, (defaults::kEdgeRasterSide + grid - 1) / grid);
}

cv::Mat edge_map(const cv::Mat& image_rgb, int grid) {
  if (image_rgb.type() != CV_8UC3) throw std::invalid_argument("edge_map expects an (H, W, 3) uint8 RGB image");
  const int side = grid * edge_raster_scale(grid);
  // x / 255 as numpy's astype(float32) / 255.0: a float division (x * (1 / 255) differs in the last bit).
  cv::Mat f(image_rgb.size(), CV_32FC3);
  for (int y = 0; y < image_rgb.rows; ++y) {
    const uchar* src = image_rgb.ptr<uchar>(y);
    float* dst = f.ptr<float>(y);
    for (int k = 0; k < 3 * image_rgb.cols; ++k) dst[k] = static_cast<float>(src[k]) / 255.0f;
  }
  cv::Mat img, lab, gx, gy, sq, sqy;
  cv::resize(f, img, cv::Size(side, side), 0, 0, cv::INTER_AREA);
  cv::cvtColor(img, lab, cv::COLOR_RGB2Lab);
  cv::GaussianBlur(lab, lab, cv::Size(0, 0), defaults::kEdgeBlurSigma);
  cv::Scharr(lab, gx, CV_32F, 1, 0);
  cv::Scharr(lab, gy, CV_32F, 0, 1);
  cv::multiply(gx, gx, sq);
  cv::multiply(gy, gy, sqy);
  cv::add(sq, sqy, sq);
  std::vector<cv::Mat> ch;
  cv::split(sq, ch);
  cv::Mat total;
  cv::add(ch[0], ch[1], total);
  cv::add(total, ch[2], total);
  cv::sqrt(total, total);
  return total;  // (side, side) CV_32F
}

double PixelSource::effective_radius() const {
  return radius > 0 ? radius : std::max(defaults::kMinRadius, defaults::kRadiusPer32 * grid / 32.0);
}

void PixelSource::validate() const {
  if (grid < defaults::kMinGrid || grid > defaults::kMaxGrid)
    throw std::invalid_argument("grid must be an integer in [" + std::to_string(defaults::kMinGrid) + ", " +
                                std::to_string(defaults::kMaxGrid) + "], got " + std::to_string(grid));
  if (!(std::isfinite(color_scale) && color_scale > 0))
    throw std::invalid_argument("color_scale must be a positive number, got " + std::to_string(color_scale));
  if (contour_scale && !(std::isfinite(*contour_scale) && *contour_scale > 0))
    throw std::invalid_argument("contour_scale must be a positive number or off, got " +
                                std::to_string(*contour_scale));
}

Transition PixelSource::transition(const cv::Mat& image_rgb) const {
  validate();
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
  cv::Mat edges;
  int s = 0;
  if (contour_scale) {
    edges = edge_map(image_rgb, R);
    s = edge_raster_scale(R);
  }
  const int c = (s - 1) / 2;  // raster pixel of a cell's centre within the cell (int((s - 1) / 2))
  const double rad = effective_radius();
  const int r = static_cast<int>(std::floor(rad));
  struct Edge { int i, j; double dist2, cdist2, contour; };
  std::vector<Edge> pairs;
  std::vector<double> near_color, near_contour;  // 8-neighbour pairs: they set sigma_c and sigma_e
  for (int dy = -r; dy <= r; ++dy)
    for (int dx = -r; dx <= r; ++dx) {
      if ((dy == 0 && dx == 0) || dy * dy + dx * dx > rad * rad) continue;
      // Each unordered pair once (first nonzero coordinate of the offset positive); W + W^T below
      // adds the other half. The contour samples of (i -> j) and (j -> i) need not be equal (the
      // centre pixel is not symmetric in an even cell), so the halves must be the runtime's.
      if (!(dy > 0 || (dy == 0 && dx > 0))) continue;
      const double d2 = dy * dy + dx * dx;
      const std::vector<long> line = contour_scale ? line_offsets(dy, dx, s, edges.cols) : std::vector<long>();
      for (int i = 0; i < n; ++i) {
        const int y0 = i / R, x0 = i % R, ny = y0 + dy, nx = x0 + dx;
        if (ny < 0 || ny >= R || nx < 0 || nx >= R) continue;
        const int j = ny * R + nx;
        double c2 = 0.0;
        for (int k = 0; k < 3; ++k) {
          const double diff = lab[3 * i + k] - lab[3 * j + k];
          c2 += diff * diff;
        }
        double contour = 0.0;
        if (contour_scale) {
          const float* raster = edges.ptr<float>(0);  // continuous (side, side)
          const long centre = static_cast<long>(y0 * s + c) * edges.cols + (x0 * s + c);
          float strongest = raster[centre + line[0]];
          for (size_t k = 1; k < line.size(); ++k) strongest = std::max(strongest, raster[centre + line[k]]);
          contour = strongest;
        }
        pairs.push_back({i, j, d2, c2, contour});
        if (d2 <= 2.0) {
          near_color.push_back(std::sqrt(c2));
          near_contour.push_back(contour);
        }
      }
    }
  const double sigma_c = color_scale * std::max(median(near_color), defaults::kMinSigmaColor);
  const double sigma_x = rad / 2.0;
  double sigma_e = 0.0;
  if (contour_scale) {
    double edge_max = 0.0;
    cv::minMaxLoc(edges, nullptr, &edge_max);
    // Self-tuned like sigma_c; the floors keep flat images (no edges anywhere) finite.
    sigma_e = *contour_scale *
              std::max({median(near_contour), defaults::kContourFloorOfMax * edge_max, defaults::kContourFloor});
  }
  std::vector<Eigen::Triplet<double>> trip;
  trip.reserve(pairs.size());
  for (const auto& e : pairs) {
    double logw = -e.cdist2 / (2 * sigma_c * sigma_c) - e.dist2 / (2 * sigma_x * sigma_x);
    if (contour_scale) logw -= e.contour * e.contour / (2 * sigma_e * sigma_e);
    trip.emplace_back(e.i, e.j, std::exp(logw));
  }
  Sparse W(n, n);
  W.setFromTriplets(trip.begin(), trip.end());
  // The self-loop keeps every degree positive even where all neighbour weights underflow, so
  // P = D^-1 W always exists.
  Sparse I(n, n);
  I.setIdentity();
  W = W + Sparse(W.transpose()) + I * defaults::kPixelSelfLoop;
  const Vector d = W * Vector::Ones(n);
  tr.P = Sparse(d.cwiseInverse().asDiagonal() * W);
  tr.stationary = d / d.sum();
  return tr;
}

}  // namespace walkcut
