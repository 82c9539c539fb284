// walkcut_demo: a thin command line over the walkcut_cpp library (parse, call, print).
#include <opencv2/imgproc.hpp>
#include <opencv2/videoio.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>
#include <stdexcept>

#include "walkcut/io.hpp"
#include "walkcut/pipeline.hpp"

namespace fs = std::filesystem;
using namespace walkcut;

namespace {

const char* kUsage = R"(usage: walkcut_demo (--image FILE... | --video FILE | --camera N | --matrix P.npy) --out DIR [options]

inputs
  --image FILE        image to segment (repeatable): writes STEM_labels.png (uint16), STEM_overlay.png,
                      STEM_grid.npy (grid labels, int32)
  --video FILE        video to segment frame by frame: writes STEM_overlay.mp4
  --camera N          camera index (stops after --max-frames, default 300)
  --matrix P.npy      row-stochastic (n, n) float32/float64 transition matrix: writes STEM_labels.npy
  --stationary PI.npy its stationary distribution, if known (matrix input)
  --sparse            treat the matrix as sparse (pixel graphs)
  --repeat N          time the cuts N times (after a warm-up) and report the median
source
  --model FILE        walkcut ONNX model or TensorRT engine (contract checked); default: pixels source
  --backend NAME      auto | ort | trt | opencv-dnn (default auto)
  --grid R            pixels source grid (default 32)
  --contour-scale S|off  pixels source: intervening-contour term, sigma_e = S x median edge (default 2)
  --save-input        with --model and --image: also write STEM_input.npy, the (1, 3, S, S) engine input
  --save-graph        with --image: also write STEM_P.npy (the (n, n) transition matrix, float64) and
                      STEM_pi.npy (its stationary distribution, when known)
cuts (defaults as the Python runtime; a model's own cut_defaults replace them, flags given here win)
  --mode walk|dot|cosine   --power T   --threshold auto-ncut|auto-mincut|auto-ncut-unweighted|NUMBER
  --max-segments K (32)    --min-size M (n/256)   --exponent E (1)   --eigen-tol TOL (1e-5)
  --upsample joint-bilateral|nearest|snap (joint-bilateral; snap: boundaries snapped to a fine pixel-walk
                      segmentation, 64 segments at grid 32)
  --seed S (0)        seeds the eigensolvers' random start vectors
other
  --max-frames N      stop video/camera after N frames
  --out DIR           output folder (created)
)";

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Args {
  std::vector<std::string> images;
  std::string video, matrix, stationary, out;
  int camera = -1, max_frames = -1, repeat = 1;
  bool sparse = false, save_input = false, save_graph = false;
  PipelineOptions pipe;
};

int to_int(const std::string& flag, const std::string& v) {
  size_t used = 0;
  int x = 0;
  try {
    x = std::stoi(v, &used);
  } catch (const std::exception&) {
  }
  if (used == 0 || used != v.size()) throw UsageError(flag + " expects an integer, got '" + v + "'");
  return x;
}

double to_double(const std::string& flag, const std::string& v) {
  size_t used = 0;
  double x = 0;
  try {
    x = std::stod(v, &used);
  } catch (const std::exception&) {
  }
  if (used == 0 || used != v.size()) throw UsageError(flag + " expects a number, got '" + v + "'");
  return x;
}

// --contour-scale: a positive number, or off/none (no contour term), as `walkcut segment` takes it.
std::optional<double> contour_scale(const std::string& flag, const std::string& v) {
  if (v == "off" || v == "none") return std::nullopt;
  const double x = to_double(flag, v);
  if (!(std::isfinite(x) && x > 0)) throw UsageError(flag + " expects a positive number or 'off', got '" + v + "'");
  return x;
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    if (f == "-h" || f == "--help") {
      std::cout << kUsage;
      std::exit(0);
    }
    if (f == "--sparse" || f == "--save-input" || f == "--save-graph") {
      (f == "--sparse" ? a.sparse : f == "--save-input" ? a.save_input : a.save_graph) = true;
      continue;
    }
    if (i + 1 >= argc) throw UsageError(f.rfind("--", 0) == 0 ? f + " needs a value" : "unexpected argument '" + f + "'");
    const std::string v = argv[++i];
    if (f == "--image") a.images.push_back(v);
    else if (f == "--video") a.video = v;
    else if (f == "--camera") a.camera = to_int(f, v);
    else if (f == "--matrix") a.matrix = v;
    else if (f == "--stationary") a.stationary = v;
    else if (f == "--out") a.out = v;
    else if (f == "--model") a.pipe.model = v;
    else if (f == "--backend") a.pipe.backend = v;
    else if (f == "--grid") a.pipe.grid = to_int(f, v);
    else if (f == "--contour-scale") a.pipe.contour_scale = contour_scale(f, v);
    else if (f == "--mode") a.pipe.given.mode = v;
    else if (f == "--power") a.pipe.given.power = to_int(f, v);
    else if (f == "--threshold") a.pipe.given.threshold = Threshold::parse(v);
    else if (f == "--max-segments") a.pipe.given.max_segments = to_int(f, v);
    else if (f == "--min-size") a.pipe.given.min_size = to_int(f, v);
    else if (f == "--upsample") a.pipe.given.upsample = v;
    else if (f == "--exponent") a.pipe.cuts.exponent = to_double(f, v);
    else if (f == "--eigen-tol") a.pipe.cuts.eigen_tol = to_double(f, v);
    else if (f == "--seed") {
      const int seed = to_int(f, v);
      if (seed < 0) throw UsageError("--seed expects an integer >= 0, got '" + v + "'");
      a.pipe.cuts.seed = static_cast<std::uint64_t>(seed);
    }
    else if (f == "--max-frames") a.max_frames = to_int(f, v);
    else if (f == "--repeat") a.repeat = to_int(f, v);
    else throw UsageError("unknown option '" + f + "'");
  }
  const int inputs = !a.images.empty() + !a.video.empty() + (a.camera >= 0) + !a.matrix.empty();
  if (inputs != 1) throw UsageError("give exactly one kind of input: --image, --video, --camera or --matrix");
  if (a.out.empty()) throw UsageError("--out DIR is required");
  if (a.save_input && (a.pipe.model.empty() || a.images.empty()))
    throw UsageError("--save-input needs --model and --image");
  if (a.save_graph && a.images.empty()) throw UsageError("--save-graph needs --image");
  return a;
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

int run_matrix(const Args& a) {
  auto t0 = std::chrono::steady_clock::now();
  const Dense P = read_npy_matrix(a.matrix);
  const Vector pi = a.stationary.empty() ? Vector() : read_npy_vector(a.stationary);
  const double read_ms = ms_since(t0);
  const Sparse Ps = a.sparse ? Sparse(P.sparseView()) : Sparse();
  // --repeat N: median over N runs after one warm-up, for benchmarks.
  // Each run is cut_transition_matrix in its two steps (graph, then hierarchy + stopping rule), timed apart.
  std::vector<double> runs, graph_runs;
  CutResult cut;
  CutOptions cuts = a.pipe.cuts;  // no model here: the package defaults, then the flags
  std::string upsample;
  a.pipe.given.apply(cuts, upsample);
  cuts.validate();
  for (int r = 0; r < std::max(1, a.repeat) + (a.repeat > 1 ? 1 : 0); ++r) {
    t0 = std::chrono::steady_clock::now();
    const Affinity W = a.sparse ? affinity(Ps, cuts, pi) : affinity(P, cuts, pi);
    const double graph_ms = ms_since(t0);
    cut = cut_affinity(W, cuts);
    if (a.repeat <= 1 || r > 0) runs.push_back(ms_since(t0)), graph_runs.push_back(graph_ms);
  }
  std::sort(runs.begin(), runs.end());
  std::sort(graph_runs.begin(), graph_runs.end());
  const double cuts_ms = runs[runs.size() / 2], graph_ms = graph_runs[graph_runs.size() / 2];
  const std::string dst = (fs::path(a.out) / (fs::path(a.matrix).stem().string() + "_labels.npy")).string();
  write_npy_labels(dst, cut.labels);
  std::printf("%s: %d nodes, %d segments (threshold %.4g on %s) -> %s\n", a.matrix.c_str(), static_cast<int>(P.rows()),
              cut.n_segments(), cut.threshold, cut.scaled ? "scaled_mincut" : "ncut", dst.c_str());
  std::printf("timings: read %.1f ms, cuts %.1f ms (graph %.1f ms)\n", read_ms, cuts_ms, graph_ms);
  const SolverStats& st = cut.hierarchy.stats;
  std::printf("solvers: %d small nodes; %d shift-invert nodes (%d banded, %ld solves); %d recycled-Lanczos nodes "
              "(%d from a parent block, %ld products); %d fallbacks\n",
              st.small_nodes, st.shift_invert_nodes, st.banded_nodes, st.shift_invert_solves, st.recycled_nodes,
              st.recycled_starts, st.recycled_products, st.fallbacks);
  return 0;
}

void print_timings(const std::string& what, const Segmentation& s, double read_ms, double write_ms) {
  std::printf("%s: %d segments; timings: read %.1f ms, preprocess %.1f ms, source %.1f ms, cuts %.1f ms, "
              "upsample %.1f ms, write %.1f ms\n",
              what.c_str(), s.n_segments, read_ms, s.timings.preprocess_ms, s.timings.source_ms, s.timings.cuts_ms,
              s.timings.upsample_ms, write_ms);
}

// --save-graph: the walk the cuts ran on, for comparisons with the Python runtime.
void save_graph(const std::string& stem, const Transition& tr) {
  const Dense P = tr.sparse ? Dense(tr.P) : tr.P_dense;
  cv::Mat m(static_cast<int>(P.rows()), static_cast<int>(P.cols()), CV_64F);
  Eigen::Map<Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(m.ptr<double>(), P.rows(),
                                                                                      P.cols()) = P;
  write_npy_array(stem + "_P.npy", m);
  if (tr.stationary.size()) {
    cv::Mat pi(1, static_cast<int>(tr.stationary.size()), CV_64F);
    Eigen::Map<Vector>(pi.ptr<double>(), tr.stationary.size()) = tr.stationary;
    write_npy_array(stem + "_pi.npy", pi);
  }
}

int run_images(const Args& a, Pipeline& pipe) {
  int failed = 0;
  for (const auto& path : a.images) {
    try {
      auto t0 = std::chrono::steady_clock::now();
      const cv::Mat rgb = read_image_rgb(path);
      const double read_ms = ms_since(t0);
      const Segmentation s = pipe.segment(rgb);
      t0 = std::chrono::steady_clock::now();
      const fs::path stem = fs::path(a.out) / fs::path(path).stem();
      write_label_png(stem.string() + "_labels.png", s.labels);
      write_rgb_png(stem.string() + "_overlay.png", overlay(rgb, s.labels));
      write_npy_labels(stem.string() + "_grid.npy", s.grid_labels);
      if (a.save_input) write_npy_array(stem.string() + "_input.npy", pipe.model_input(rgb));
      if (a.save_graph) save_graph(stem.string(), pipe.transition(rgb));
      print_timings(path, s, read_ms, ms_since(t0));
    } catch (const std::exception& e) {  // one bad image does not stop the others
      std::fprintf(stderr, "walkcut_demo: error: %s\n", e.what());
      ++failed;
    }
  }
  return failed ? 1 : 0;
}

int run_video(const Args& a, Pipeline& pipe) {
  cv::VideoCapture cap;
  std::string name;
  if (a.camera >= 0) {
    cap.open(a.camera);
    name = "camera" + std::to_string(a.camera);
  } else {
    if (!fs::exists(a.video)) throw std::runtime_error(a.video + ": no such file");
    cap.open(a.video);
    name = fs::path(a.video).stem().string();
  }
  if (!cap.isOpened()) throw std::runtime_error((a.camera >= 0 ? name : a.video) + ": cannot open as a video");
  const int max_frames = a.max_frames > 0 ? a.max_frames : (a.camera >= 0 ? 300 : -1);
  double fps = cap.get(cv::CAP_PROP_FPS);
  if (!(fps > 0 && fps < 1000)) fps = 25.0;
  const std::string dst = (fs::path(a.out) / (name + "_overlay.mp4")).string();
  cv::VideoWriter writer;
  cv::Mat frame;
  int n = 0;
  Timings sum;
  while ((max_frames < 0 || n < max_frames) && cap.read(frame) && !frame.empty()) {
    const cv::Mat rgb = to_rgb8(frame, name);
    const Segmentation s = pipe.segment(rgb);
    if (!writer.isOpened()) {
      writer.open(dst, cv::VideoWriter::fourcc('m', 'p', '4', 'v'), fps, rgb.size());
      if (!writer.isOpened()) throw std::runtime_error(dst + ": cannot open a video writer (mp4v)");
    }
    cv::Mat bgr;
    cv::cvtColor(overlay(rgb, s.labels), bgr, cv::COLOR_RGB2BGR);
    writer.write(bgr);
    sum.preprocess_ms += s.timings.preprocess_ms, sum.source_ms += s.timings.source_ms;
    sum.cuts_ms += s.timings.cuts_ms, sum.upsample_ms += s.timings.upsample_ms;
    ++n;
  }
  writer.release();  // finalise the file before reporting
  if (n == 0) throw std::runtime_error((a.camera >= 0 ? name : a.video) + ": no frames could be read");
  std::printf("%s: %d frames -> %s; mean timings: preprocess %.1f ms, source %.1f ms, cuts %.1f ms, upsample %.1f ms\n",
              name.c_str(), n, dst.c_str(), sum.preprocess_ms / n, sum.source_ms / n, sum.cuts_ms / n,
              sum.upsample_ms / n);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  try {
    args = parse(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "walkcut_demo: error: %s\n(see walkcut_demo --help)\n", e.what());
    return 2;
  }
  try {
    fs::create_directories(args.out);
    if (!args.matrix.empty()) return run_matrix(args);
    Pipeline pipe(args.pipe);
    std::printf("source: %s\n", pipe.source_name().c_str());
    std::printf("cuts: %s\n", pipe.describe_cuts().c_str());
    return args.images.empty() ? run_video(args, pipe) : run_images(args, pipe);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "walkcut_demo: error: %s\n", e.what());
    return 1;
  }
}
