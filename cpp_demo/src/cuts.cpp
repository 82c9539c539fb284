// Two-way NCut (Fiedler vector + exact sweep) and the best-first hierarchy: the C++ twin of the
// runtime's default "fast" cut method (runtime/cuts/nodes.py, sparse.py, spectral.py, hierarchy.py).
//
// Node solvers (as bipartition_fast):
// - up to kDenseMaxNodes nodes: Spectra Lanczos to kSmallGraphTol (the runtime's dense eigh);
// - larger nodes of a sparse (pixel) graph: shift-invert Lanczos on (L + sigma I)^-1, factored by a
//   banded Cholesky in the node's row-major order (node_solvers.cpp), 7-15 solves per node;
// - larger nodes of a dense (attention) graph: one Lanczos run started from a Rayleigh-Ritz step on
//   the parent's top Ritz vectors restricted to the node, handing its own Ritz vectors on;
// - any of them that fails (factorisation, no convergence): Spectra Lanczos on M - u u^T, then dense.
#include <Spectra/SymEigsSolver.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <queue>
#include <tuple>
#include <iterator>
#include <random>
#include <sstream>
#include <stdexcept>

#include "node_solvers.hpp"
#include "walkcut/cuts.hpp"

namespace walkcut {
namespace {

struct Split {
  std::vector<char> side;  // 1 for nodes in A (local indices)
  double ncut, cut, volume;
};

// ---- sub-graphs --------------------------------------------------------------------------------
Dense submatrix(const Dense& W, const std::vector<int>& idx) { return W(idx, idx); }

Sparse submatrix(const Sparse& W, const std::vector<int>& idx) {
  std::vector<int> local(W.rows(), -1);
  for (size_t k = 0; k < idx.size(); ++k) local[idx[k]] = static_cast<int>(k);
  std::vector<Eigen::Triplet<double>> trip;
  for (size_t k = 0; k < idx.size(); ++k)
    for (Sparse::InnerIterator it(W, idx[k]); it; ++it)
      if (local[it.col()] >= 0) trip.emplace_back(static_cast<int>(k), local[it.col()], it.value());
  Sparse S(idx.size(), idx.size());
  S.setFromTriplets(trip.begin(), trip.end());
  return S;
}

Vector row_sums(const Dense& W) { return W.rowwise().sum(); }
Vector row_sums(const Sparse& W) { return W * Vector::Ones(W.cols()); }
double total(const Dense& W) { return W.sum(); }
double total(const Sparse& W) { return W.sum(); }

// ---- eigensolvers ------------------------------------------------------------------------------
// Deflated symmetric operator M - u u^T, M = D^-1/2 W D^-1/2: its top eigenvector is the Fiedler
// direction, so the solver needs one eigenpair only. Neither M nor the deflation is formed (cut
// engine v2, runtime/cuts/nodes.py): the dense operator keeps one single-precision copy of the
// node's W and applies s .* (W (s .* x)) - u (u . x); the products are memory-bound, and the Python
// runtime also cuts dense graphs in float32.
struct DenseOp {
  using Scalar = double;
  Eigen::MatrixXf Wf;  // (m, m) the node's affinity, single precision
  Vector s, u;         // d^-1/2 and the known top eigenvector
  Eigen::Index rows() const { return Wf.rows(); }
  Eigen::Index cols() const { return Wf.cols(); }
  void perform_op(const double* x, double* y) const {
    Eigen::Map<const Vector> xv(x, Wf.rows());
    const Eigen::VectorXf xf = s.cwiseProduct(xv).cast<float>();
    Eigen::Map<Vector> yv(y, Wf.rows());
    yv = s.cwiseProduct((Wf * xf).cast<double>());
    yv -= u * u.dot(xv);
  }
  // The same for the k columns of X in one single-precision GEMM: W is streamed from memory once
  // (at n = 4096 a 12-column product costs about 2 single products), as nodes.py's _Operator.
  Dense perform_block(const Dense& X) const {
    const Eigen::MatrixXf Xf = (s.asDiagonal() * X).cast<float>();
    Dense Y = s.asDiagonal() * (Wf * Xf).cast<double>();
    Y.noalias() -= u * (u.transpose() * X);
    return Y;
  }
};

struct SparseOp {
  using Scalar = double;
  Sparse M;
  Vector u;
  Eigen::Index rows() const { return M.rows(); }
  Eigen::Index cols() const { return M.cols(); }
  void perform_op(const double* x, double* y) const {
    Eigen::Map<const Vector> xv(x, M.rows());
    Eigen::Map<Vector> yv(y, M.rows());
    yv.noalias() = M * xv;
    yv -= u * u.dot(xv);
  }
};

// The deflated matrix, formed only for the dense fallback and the tiny nodes.
Dense dense_of(const DenseOp& op) {
  Dense M = op.s.asDiagonal() * op.Wf.cast<double>() * op.s.asDiagonal();
  M.noalias() -= op.u * op.u.transpose();
  return M;
}
Dense dense_of(const SparseOp& op) { return Dense(op.M) - op.u * op.u.transpose(); }

DenseOp make_op(const Dense& W, const Vector& inv_sqrt_d, const Vector& u) {
  return DenseOp{W.cast<float>(), inv_sqrt_d, u};
}

SparseOp make_op(const Sparse& W, const Vector& inv_sqrt_d, const Vector& u) {
  return SparseOp{Sparse(inv_sqrt_d.asDiagonal() * W * inv_sqrt_d.asDiagonal()), u};
}

Vector top_dense(const Dense& A) {
  Eigen::SelfAdjointEigenSolver<Dense> es(A);  // eigenvalues ascending
  if (es.info() != Eigen::Success) throw std::runtime_error("dense eigensolver failed");
  return es.eigenvectors().col(A.rows() - 1);
}

template <class Op>
std::optional<Vector> top_lanczos(Op& op, const Vector& v0, int ncv, int maxit, double tol) {
  Spectra::SymEigsSolver<Op> solver(op, 1, ncv);
  solver.init(v0.data());
  solver.compute(Spectra::SortRule::LargestAlge, maxit, tol, Spectra::SortRule::LargestAlge);
  if (solver.info() != Spectra::CompInfo::Successful) return std::nullopt;
  Vector v = solver.eigenvectors().col(0);
  if (!v.allFinite()) return std::nullopt;
  return v;
}

Vector fix_sign(Vector y) {
  Eigen::Index at;
  y.cwiseAbs().maxCoeff(&at);
  if (y[at] < 0) y = -y;
  return y;
}

Vector random_start(int m, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> uni(-1.0, 1.0);
  Vector v0(m);
  for (int i = 0; i < m; ++i) v0[i] = uni(rng);
  return v0;
}

// Second generalised eigenvector y of (D - W) y = lambda D y, sign fixed (largest |y_i| positive),
// by Spectra's Lanczos (the exact path's solver; the fast node solvers fall back to it). `start`, a
// guess of y (an unconverged node solver's), replaces the random start as spectral.fiedler_vector's.
template <class Matrix>
Vector fiedler_vector(const Matrix& W, const Vector& d, const CutOptions& opt, const Vector* start = nullptr) {
  const int m = static_cast<int>(W.rows());
  const Vector sqrt_d = d.cwiseSqrt();
  const Vector u = sqrt_d / sqrt_d.norm();
  auto op = make_op(W, sqrt_d.cwiseInverse(), u);
  Vector v;
  if (m <= defaults::kIterativeMinNodes) {
    v = top_dense(dense_of(op));
  } else {
    Vector v0 = random_start(m, opt.seed);
    if (start && start->size() == m && start->allFinite()) {
      Vector guess = start->cwiseProduct(sqrt_d);  // y -> v of the symmetric problem
      guess -= u * u.dot(guess);
      if (guess.norm() > 1e-8 * sqrt_d.norm())
        v0 = guess + 1e-3 * guess.norm() / std::sqrt(static_cast<double>(m)) * v0;  // keep every direction present
    }
    v0 -= u * u.dot(v0);  // start orthogonal to the known top eigenvector
    // Up to kDenseMaxNodes the Python runtime solves exactly (LAPACK, top eigenpair only); a full
    // Eigen eigendecomposition costs O(m^3) per node, so Lanczos to near machine precision stands
    // in for it here. Fallback chain: Lanczos, Lanczos with a larger Krylov space, dense.
    const double tol = m <= defaults::kDenseMaxNodes ? defaults::kSmallGraphTol : opt.eigen_tol;
    std::optional<Vector> got = top_lanczos(op, v0, std::min(m - 1, defaults::kLanczosNcv), 50 * m, tol);
    if (!got) got = top_lanczos(op, v0, std::min(m - 1, 3 * defaults::kLanczosNcv), 200 * m, tol);
    if (!got) {
      if (m > defaults::kDenseFallbackMaxNodes)
        throw std::runtime_error("all eigensolvers failed on " + std::to_string(m) + " nodes");
      got = top_dense(dense_of(op));
    }
    v = *got;
  }
  return fix_sign(v.cwiseQuotient(sqrt_d));
}

// Orthonormal basis of the columns of S orthogonal to u (nearly dependent columns dropped).
Dense orthonormalize(Dense S, const Vector& u) {
  for (int pass = 0; pass < 2; ++pass) S.noalias() -= u * (u.transpose() * S);
  const double largest = S.cols() ? S.colwise().norm().maxCoeff() : 0.0;
  std::vector<int> keep;
  for (int j = 0; j < S.cols(); ++j)
    if (S.col(j).norm() > 1e-8 * std::max(1.0, largest)) keep.push_back(j);
  if (keep.empty()) return Dense(S.rows(), 0);
  Dense kept = S(Eigen::all, keep);
  kept.colwise().normalize();
  Eigen::ColPivHouseholderQR<Dense> qr(kept.rows(), kept.cols());
  qr.setThreshold(1e-8);
  qr.compute(kept);
  Dense Q = qr.householderQ() * Dense::Identity(kept.rows(), qr.rank());
  Q.noalias() -= u * (u.transpose() * Q);
  return Q;
}

// Dense graph, node above kDenseMaxNodes (fast.bipartition_fast, NODE_SOLVER = "lanczos"): one
// Lanczos run to opt.eigen_tol (the runtime's FAST_TOL_F32, 1e-5) started from the best vector of one
// Rayleigh-Ritz step on `block` (the parent's Ritz vectors restricted to this node); returns y and
// the node's own top Ritz vectors in `ritz` for its children.
Vector recycled_fiedler(const Dense& W, const Vector& d, const CutOptions& opt, const Dense* block, Dense* ritz,
                        SolverStats& stats) {
  const int m = static_cast<int>(W.rows());
  const Vector sqrt_d = d.cwiseSqrt();
  const Vector u = sqrt_d / sqrt_d.norm();
  const DenseOp op = make_op(W, sqrt_d.cwiseInverse(), u);
  const detail::Apply apply = [&op](const Vector& x, Vector& y) { op.perform_op(x.data(), y.data()); };
  const int k = std::min(defaults::kBlockSize, std::max(2, (m - 1) / 4));
  Vector v0 = random_start(m, opt.seed);
  if (block && block->rows() == m && block->allFinite() && k > defaults::kRandomColumns) {
    const Dense X = orthonormalize(block->leftCols(std::min<Eigen::Index>(block->cols(), k - defaults::kRandomColumns)), u);
    if (X.cols() > 0) {  // one Rayleigh-Ritz step: the best start the recycled vectors hold
      ++stats.recycled_starts;
      stats.recycled_products += X.cols();
      const Dense G = X.transpose() * op.perform_block(X);
      Eigen::SelfAdjointEigenSolver<Dense> es((G + G.transpose()) * 0.5);
      if (es.info() == Eigen::Success)
        v0 = X * es.eigenvectors().col(X.cols() - 1) + 1e-3 / std::sqrt(static_cast<double>(m)) * v0;
    }
  }
  const detail::LanczosResult r =
      detail::lanczos_top(apply, u, v0, opt.eigen_tol, defaults::kLanczosMaxSteps, k, defaults::kLanczosCheck, false);
  *ritz = r.ritz;
  ++stats.recycled_nodes;
  stats.recycled_products += r.steps;
  if (!r.converged) {
    ++stats.fallbacks;
    const Vector guess = r.v.cwiseQuotient(sqrt_d);
    return fiedler_vector(W, d, opt, &guess);
  }
  return fix_sign(r.v.cwiseQuotient(sqrt_d));
}

// Sparse graph, node above kDenseMaxNodes (sparse.shift_invert_fiedler): Lanczos on
// Q (L + sigma I)^-1 Q to a relative Ritz residual of kShiftInvertTol; Spectra on M if the
// factorisation fails (random start) or the Lanczos does not converge (started from its vector).
Vector shift_invert_fiedler(const Sparse& W, const Vector& d, const CutOptions& opt, SolverStats& stats) {
  const int m = static_cast<int>(W.rows());
  const Vector sqrt_d = d.cwiseSqrt();
  const Vector u = sqrt_d / sqrt_d.norm();
  const detail::ShiftInvert si(W, sqrt_d.cwiseInverse(), u, defaults::kShiftInvertSigma);
  ++stats.shift_invert_nodes;
  if (!si.ok()) {
    ++stats.fallbacks;
    return fiedler_vector(W, d, opt);
  }
  stats.banded_nodes += si.banded();
  const detail::Apply apply = [&si](const Vector& x, Vector& y) { si.apply(x, y); };
  const detail::LanczosResult r = detail::lanczos_top(apply, u, random_start(m, opt.seed), defaults::kShiftInvertTol,
                                                      defaults::kShiftInvertMaxSteps, 1, defaults::kShiftInvertCheck, true);
  stats.shift_invert_solves += r.steps;
  const Vector y = r.v.cwiseQuotient(sqrt_d);
  if (!r.converged) {
    ++stats.fallbacks;
    return fiedler_vector(W, d, opt, &y);
  }
  return fix_sign(y);
}

// The node solver for this node (see the top of the file); `ritz` receives the Ritz vectors a dense
// node hands to its children (left empty otherwise).
Vector node_fiedler(const Dense& W, const Vector& d, const CutOptions& opt, const Dense* block, Dense* ritz,
                    SolverStats& stats) {
  if (W.rows() <= defaults::kDenseMaxNodes) return ++stats.small_nodes, fiedler_vector(W, d, opt);
  return recycled_fiedler(W, d, opt, block, ritz, stats);
}

Vector node_fiedler(const Sparse& W, const Vector& d, const CutOptions& opt, const Dense*, Dense*, SolverStats& stats) {
  if (W.rows() <= defaults::kDenseMaxNodes) return ++stats.small_nodes, fiedler_vector(Dense(W), d, opt);
  return shift_invert_fiedler(W, d, opt, stats);
}

// ---- exact sweep ---------------------------------------------------------------------------------
// lower[p] = sum of W between the p-th node in y-order and the nodes before it.
Vector lower_sums(const Dense& W, const std::vector<int>& pos) {
  const int m = static_cast<int>(W.rows());
  Vector lower = Vector::Zero(m);
  for (int i = 0; i < m; ++i) {  // column i is contiguous; W is symmetric
    const double* col = W.col(i).data();
    const int pi = pos[i];
    double s = 0.0;
    for (int j = 0; j < m; ++j) s += pos[j] < pi ? col[j] : 0.0;
    lower[pi] = s;
  }
  return lower;
}

Vector lower_sums(const Sparse& W, const std::vector<int>& pos) {
  Vector lower = Vector::Zero(W.rows());
  for (int i = 0; i < W.outerSize(); ++i)
    for (Sparse::InnerIterator it(W, i); it; ++it)
      if (pos[it.col()] < pos[i]) lower[pos[i]] += it.value();
  return lower;
}

double diag_at(const Dense& W, int i) { return W(i, i); }
double diag_at(const Sparse& W, int i) { return W.coeff(i, i); }

template <class Matrix>
std::optional<Split> sweep_ncut(const Matrix& W, const Vector& d, const Vector& y, int min_size) {
  const int m = static_cast<int>(W.rows());
  if (m < 2 * min_size || m < 2) return std::nullopt;
  std::vector<int> order(m), pos(m);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return y[a] < y[b]; });
  for (int p = 0; p < m; ++p) pos[order[p]] = p;
  const Vector lower = lower_sums(W, pos);
  // Sequential prefix sums, as numpy's cumsum.
  std::vector<double> assoc(m), vol(m);
  double a = 0.0, v = 0.0;
  for (int p = 0; p < m; ++p) {
    a += 2.0 * lower[p] + diag_at(W, order[p]);
    v += d[order[p]];
    assoc[p] = a, vol[p] = v;
  }
  const double tot = vol[m - 1];
  double best = kInf;
  int kb = min_size - 1;
  for (int k = min_size - 1; k < m - min_size; ++k) {
    const double cut = std::max(vol[k] - assoc[k], 0.0);
    double nc = cut / vol[k] + cut / (tot - vol[k]);
    if (!std::isfinite(nc)) nc = kInf;
    if (nc < best) best = nc, kb = k;
  }
  Split s{std::vector<char>(m, 0), best, std::max(vol[kb] - assoc[kb], 0.0), tot};
  for (int p = 0; p <= kb; ++p) s.side[order[p]] = 1;
  return s;
}

// `block`: the parent's Ritz vectors restricted to this node (dense graphs; may be null); `ritz`
// receives this node's (left empty where none are made).
template <class Matrix>
std::optional<Split> bipartition(const Matrix& W, int min_size, const CutOptions& opt, SolverStats& stats,
                                 const Dense* block = nullptr, Dense* ritz = nullptr) {
  const int m = static_cast<int>(W.rows());
  const int need = std::max(2, 2 * min_size);
  if (m < need) return std::nullopt;
  const Vector d = row_sums(W);
  std::vector<int> live;
  for (int i = 0; i < m; ++i)
    if (d[i] > 0) live.push_back(i);
  if (static_cast<int>(live.size()) < need) return std::nullopt;
  if (static_cast<int>(live.size()) < m) {
    // Zero-degree nodes carry no volume and no cut: they join the larger side.
    auto inner = bipartition(submatrix(W, live), min_size, opt, stats);
    if (!inner) return std::nullopt;
    const long in_a = std::count(inner->side.begin(), inner->side.end(), 1);
    Split s{std::vector<char>(m, in_a * 2 >= static_cast<long>(live.size()) ? 1 : 0), inner->ncut, inner->cut,
            inner->volume};
    for (size_t k = 0; k < live.size(); ++k) s.side[live[k]] = inner->side[k];
    return s;
  }
  Dense unused;
  return sweep_ncut(W, d, node_fiedler(W, d, opt, block, ritz ? ritz : &unused, stats), min_size);
}

// ---- hierarchy -----------------------------------------------------------------------------------
struct Growing {
  HierarchyNode node;
  std::vector<int> a, b;    // sides of the best split
  std::vector<int> la, lb;  // the same sides as positions in `members`
  Dense ritz;               // dense graphs: Ritz vectors for the children, dropped once they exist
};

template <class Matrix>
Hierarchy build_hierarchy(const Matrix& W, int min_size, const CutOptions& opt) {
  const int n = static_cast<int>(W.rows());
  Hierarchy tree;
  tree.n = n;
  const Vector deg = row_sums(W);
  std::vector<int> active;
  for (int i = 0; i < n; ++i) (deg[i] > 0 ? active : tree.isolated).push_back(i);
  std::vector<Growing> nodes;
  // `block`: the parent's Ritz vectors restricted to the new node (dense graphs), or empty.
  auto add = [&](std::vector<int> members, int parent, int depth, const Dense& block) {
    Growing g;
    const Matrix sub = submatrix(W, members);
    g.node.parent = parent;
    g.node.depth = depth;
    g.node.volume = total(sub);
    // Sparse nodes keep their sparse graph for the shift-invert solver; those small enough for the
    // dense solver become dense inside node_fiedler (as fast.sub_block).
    std::optional<Split> split = bipartition(sub, min_size, opt, tree.stats, block.size() ? &block : nullptr, &g.ritz);
    if (split) {
      g.node.ncut = split->ncut;
      g.node.mincut = split->cut;
      g.node.scaled_mincut = split->volume > 0 ? split->cut / split->volume : kInf;
      for (size_t k = 0; k < members.size(); ++k) {
        (split->side[k] ? g.a : g.b).push_back(members[k]);
        (split->side[k] ? g.la : g.lb).push_back(static_cast<int>(k));
      }
    } else {
      g.ritz.resize(0, 0);
    }
    g.node.members = std::move(members);
    nodes.push_back(std::move(g));
    return static_cast<int>(nodes.size()) - 1;
  };
  // Min-heap on (max(cost, floor), -size, id), as build_hierarchy's growth_key: costs below the
  // floor are equally certain, so the larger node grows first and rounding cannot reorder them.
  using Entry = std::tuple<double, long, int>;
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap;
  auto key = [&](int k) {
    return Entry(std::max(nodes[k].node.ncut, defaults::kCostFloor),
                 -static_cast<long>(nodes[k].node.members.size()), k);
  };
  if (!active.empty()) {
    add(active, -1, 0, Dense());
    heap.push(key(0));
  }
  int n_leaves = 1;
  while (!heap.empty() && n_leaves < opt.max_segments) {
    const auto [cost, neg_size, i] = heap.top();
    heap.pop();
    if (!(cost < defaults::kExpandLimit)) break;
    std::vector<int> a = nodes[i].a, b = nodes[i].b, la = nodes[i].la, lb = nodes[i].lb;
    if (!(a[0] < b[0])) std::swap(a, b), std::swap(la, lb);  // children ordered by smallest member
    const int depth = nodes[i].node.depth + 1;
    const Dense ritz = std::move(nodes[i].ritz);  // `add` grows `nodes`: no references across it
    nodes[i].ritz = Dense();
    const int ka = add(std::move(a), i, depth, ritz.size() ? Dense(ritz(la, Eigen::all)) : Dense());
    const int kb = add(std::move(b), i, depth, ritz.size() ? Dense(ritz(lb, Eigen::all)) : Dense());
    nodes[i].node.children[0] = ka;
    nodes[i].node.children[1] = kb;
    heap.push(key(ka));
    heap.push(key(kb));
    ++n_leaves;
  }
  for (auto& g : nodes) tree.nodes.push_back(std::move(g.node));
  if (tree.nodes.empty()) tree.nodes.emplace_back();  // every node isolated: an empty root
  return tree;
}

}  // namespace

Threshold Threshold::parse(const std::string& text) {
  Threshold t;
  constexpr Kind kRuleKinds[] = {Kind::kAutoNcut, Kind::kAutoMincut, Kind::kAutoNcutUnweighted};
  static_assert(std::size(kRuleKinds) == std::size(defaults::kAutoRules), "one Kind per rule name");
  for (size_t k = 0; k < std::size(defaults::kAutoRules); ++k)
    if (text == defaults::kAutoRules[k]) return t.kind = kRuleKinds[k], t;
  size_t used = 0;
  double v = 0.0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || !std::isfinite(v) || v < 0)
    throw std::invalid_argument("threshold must be a number >= 0, auto-ncut, auto-mincut or auto-ncut-unweighted, "
                                "got '" + text + "'");
  t.kind = Kind::kValue;
  t.value = v;
  return t;
}

std::string Threshold::text() const {
  switch (kind) {
    case Kind::kAutoNcut: return defaults::kAutoRules[0];
    case Kind::kAutoMincut: return defaults::kAutoRules[1];
    case Kind::kAutoNcutUnweighted: return defaults::kAutoRules[2];
    case Kind::kValue: break;
  }
  std::ostringstream out;
  out << value;
  return out.str();
}

void CutOptions::validate() const {
  if (mode != "walk" && mode != "dot" && mode != "cosine")
    throw std::invalid_argument("mode must be walk, dot or cosine, got '" + mode + "'");
  if (power < 1) throw std::invalid_argument("power must be an integer >= 1, got " + std::to_string(power));
  if (max_segments < 1)
    throw std::invalid_argument("max_segments must be an integer >= 1, got " + std::to_string(max_segments));
  if (min_size != -1 && min_size < 1)
    throw std::invalid_argument("min_size must be an integer >= 1, got " + std::to_string(min_size));
  if (!(eigen_tol > 0) || !std::isfinite(eigen_tol))
    throw std::invalid_argument("eigen_tol must be a positive number, got " + std::to_string(eigen_tol));
  if (!(exponent > 0) || !std::isfinite(exponent))
    throw std::invalid_argument("exponent must be a positive finite number, got " + std::to_string(exponent));
}

void Hierarchy::costs(bool scaled, std::vector<double>* values, std::vector<double>* sizes) const {
  for (const auto& node : nodes)
    if (std::isfinite(node.cost(scaled))) {
      values->push_back(node.cost(scaled));
      if (sizes) sizes->push_back(static_cast<double>(node.members.size()));
    }
}

std::vector<int> Hierarchy::labels(double threshold, bool scaled) const {
  std::vector<const HierarchyNode*> leaves, stack{&nodes[0]};
  while (!stack.empty()) {
    const HierarchyNode* node = stack.back();
    stack.pop_back();
    if (node->has_children() && node->cost(scaled) < threshold) {
      stack.push_back(&nodes[node->children[1]]);
      stack.push_back(&nodes[node->children[0]]);
    } else if (!node->members.empty()) {
      leaves.push_back(node);
    }
  }
  std::sort(leaves.begin(), leaves.end(), [](auto* a, auto* b) { return a->members[0] < b->members[0]; });
  std::vector<int> out(n, 0);
  for (size_t k = 0; k < leaves.size(); ++k)
    for (int i : leaves[k]->members) out[i] = static_cast<int>(k);
  for (int i : isolated) out[i] = static_cast<int>(leaves.size());
  return out;
}

int CutResult::n_segments() const {
  return labels.empty() ? 0 : *std::max_element(labels.begin(), labels.end()) + 1;
}

double otsu_threshold(const std::vector<double>& values, const std::vector<double>& weights, double floor) {
  // Weighted Otsu on log costs; the threshold is the geometric midpoint of the two boundary values.
  const size_t n = values.size();
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return values[a] < values[b]; });
  std::vector<double> x(n), cw(n), cx(n);
  double sw = 0.0, sx = 0.0;
  for (size_t k = 0; k < n; ++k) {
    const double w = weights.empty() ? 1.0 : weights[order[k]];
    x[k] = std::log(std::max(values[order[k]], std::max(floor, 1e-300)));
    sw += w, sx += w * x[k];
    cw[k] = sw, cx[k] = sx;
  }
  double best = -kInf;
  size_t b = 0;
  for (size_t k = 0; k + 1 < n; ++k) {
    if (x[k + 1] == x[k]) continue;  // never cut between equal values
    const double w_lo = cw[k], w_hi = cw[n - 1] - w_lo;
    const double diff = cx[k] / w_lo - (cx[n - 1] - cx[k]) / w_hi;
    const double between = w_lo * w_hi * diff * diff;
    if (between > best) best = between, b = k;
  }
  return std::exp(0.5 * (x[b] + x[b + 1]));
}

CutResult cut_affinity(const Affinity& W, const CutOptions& opt) {
  opt.validate();
  const int n = W.size();
  const int min_size = opt.min_size == -1 ? std::max(1, n / defaults::kMinSizeDivisor) : opt.min_size;
  CutResult res;
  res.hierarchy = W.sparse ? build_hierarchy(W.csr, min_size, opt)
                           : build_hierarchy(W.dense, min_size, opt);
  if (opt.threshold.kind == Threshold::Kind::kValue) {
    res.threshold = opt.threshold.value;
  } else {
    res.scaled = opt.threshold.scaled();
    std::vector<double> values, sizes;
    res.hierarchy.costs(res.scaled, &values, &sizes);
    // Costs below the floor count as equal: their exact size is often rounding noise.
    double lo = kInf, hi = -kInf;
    for (double v : values) {
      const double l = std::max(v, defaults::kCostFloor);
      lo = std::min(lo, l), hi = std::max(hi, l);
    }
    if (values.size() < 2 || hi - lo == 0)  // no evidence to separate: the fixed fallback
      res.threshold = res.scaled ? defaults::kFallbackScaledMincut : defaults::kFallbackNcut;
    else  // auto-ncut / auto-mincut: each split weighted by the nodes it divides; auto-ncut-unweighted: once
      res.threshold = otsu_threshold(values, opt.threshold.size_weighted() ? sizes : std::vector<double>{},
                                     defaults::kCostFloor);
  }
  res.labels = res.hierarchy.labels(res.threshold, res.scaled);
  return res;
}

}  // namespace walkcut
