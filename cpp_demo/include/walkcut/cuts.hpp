// Random-walk graphs and recursive Normalized Cuts: the C++ twin of runtime/cuts/graph.py,
// runtime/cuts/spectral.py and runtime/cuts/hierarchy.py (same maths, same defaults, same label numbering).
#pragma once

#include <Eigen/Dense>
#include <Eigen/Sparse>

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "walkcut/defaults.hpp"

namespace walkcut {

using Dense = Eigen::MatrixXd;                                // (n, n), column-major
using Sparse = Eigen::SparseMatrix<double, Eigen::RowMajor>;  // (n, n) CSR, like scipy's csr_matrix
using Vector = Eigen::VectorXd;

inline constexpr double kInf = std::numeric_limits<double>::infinity();

// A symmetric non-negative affinity: dense for attention, sparse for the pixels graph.
struct Affinity {
  bool sparse = false;
  Dense dense;
  Sparse csr;
  int size() const { return sparse ? static_cast<int>(csr.rows()) : static_cast<int>(dense.rows()); }
};

// How the stopping rule is given: a number (NCut threshold) or an automatic rule (Otsu's threshold
// on the tree's log split costs, runtime/cuts/hierarchy.py resolve_threshold): auto-ncut and
// auto-mincut weight each split by the number of nodes it divides, auto-ncut-unweighted counts every
// split once (the rule tuned for ViT attention).
struct Threshold {
  enum class Kind { kValue, kAutoNcut, kAutoMincut, kAutoNcutUnweighted } kind = Kind::kAutoNcut;
  double value = 0.0;
  // "auto-ncut", "auto-mincut", "auto-ncut-unweighted" (defaults::kAutoRules) or a number >= 0
  static Threshold parse(const std::string& text);
  std::string text() const;  // the inverse of parse: a rule name or the number
  bool auto_rule() const { return kind != Kind::kValue; }
  bool scaled() const { return kind == Kind::kAutoMincut; }             // reads scaled_mincut, not ncut
  bool size_weighted() const { return kind == Kind::kAutoNcut || kind == Kind::kAutoMincut; }
};

struct CutOptions {
  std::string mode = "walk";  // walk | dot | cosine
  int power = 1;
  Threshold threshold;
  int min_size = -1;  // -1: max(1, n / 256)
  int max_segments = defaults::kMaxSegments;
  double exponent = 1.0;
  std::uint64_t seed = 0;
  double eigen_tol = defaults::kEigenTol;  // Lanczos relative residual
  void validate() const;  // throws std::invalid_argument naming the bad value
};

struct HierarchyNode {
  int parent = -1;
  int depth = 0;
  std::vector<int> members;  // sorted global node indices
  double volume = 0.0;
  double ncut = kInf;
  double mincut = kInf;
  double scaled_mincut = kInf;
  int children[2] = {-1, -1};
  bool has_children() const { return children[0] >= 0; }
  double cost(bool scaled) const { return scaled ? scaled_mincut : ncut; }
};

// Which node solver ran how often while the hierarchy grew (cuts.cpp; printed by walkcut_demo --matrix).
struct SolverStats {
  int small_nodes = 0;          // up to kDenseMaxNodes: Spectra Lanczos to kSmallGraphTol (or dense)
  int shift_invert_nodes = 0;   // sparse graphs: shift-invert Lanczos
  int banded_nodes = 0;         //   of which factored by the banded Cholesky
  long shift_invert_solves = 0;
  int recycled_nodes = 0;       // dense graphs: Lanczos from the parent's Ritz vectors
  int recycled_starts = 0;      //   of which had a parent block to start from
  long recycled_products = 0;
  int fallbacks = 0;            // nodes where Spectra took over (factorisation failed / no convergence)
};

struct Hierarchy {
  int n = 0;
  SolverStats stats;
  std::vector<HierarchyNode> nodes;
  std::vector<int> isolated;
  // Finite split costs and the sizes of the nodes they split.
  void costs(bool scaled, std::vector<double>* values, std::vector<double>* sizes = nullptr) const;
  // Flat labels: a node splits if its parent did and its cost < threshold; segments numbered by
  // their smallest member; isolated nodes form the last label.
  std::vector<int> labels(double threshold, bool scaled) const;
};

struct CutResult {
  std::vector<int> labels;  // (n,)
  Hierarchy hierarchy;
  double threshold = 0.0;
  bool scaled = false;  // true: threshold applies to scaled_mincut, else to ncut
  int n_segments() const;
};

// P validated (square, finite, non-negative, rows within kRowTol of 1) and rows renormalised.
Dense check_transition_matrix(Dense P);
Sparse check_transition_matrix(Sparse P);

Vector stationary_distribution(const Dense& P);
Vector stationary_distribution(const Sparse& P);

// W from a transition matrix; `stationary` may be empty (then computed).
Affinity affinity(const Dense& P, const CutOptions& opt, const Vector& stationary = Vector());
Affinity affinity(const Sparse& P, const CutOptions& opt, const Vector& stationary = Vector());

// Otsu's threshold on log(max(values, floor)), each value weighted (empty weights: all 1).
double otsu_threshold(const std::vector<double>& values, const std::vector<double>& weights = {},
                      double floor = 0.0);
CutResult cut_affinity(const Affinity& W, const CutOptions& opt);

template <class Matrix>
CutResult cut_transition_matrix(const Matrix& P, const CutOptions& opt, const Vector& stationary = Vector()) {
  opt.validate();
  return cut_affinity(affinity(P, opt, stationary), opt);
}

}  // namespace walkcut
