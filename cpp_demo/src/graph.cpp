// Transition-matrix checks, stationary distribution and affinities (runtime/cuts/graph.py, stationary.py).
#include <Spectra/GenEigsSolver.h>
#include <Spectra/MatOp/DenseGenMatProd.h>
#include <Spectra/MatOp/SparseGenMatProd.h>

#include <cmath>
#include <sstream>
#include <stdexcept>

#include "walkcut/cuts.hpp"

namespace walkcut {
namespace {

std::string fmt(double v) {
  std::ostringstream s;
  s.precision(6);
  s << v;
  return s.str();
}

// Shared checks on the stored values; rows are the row sums after clamping tiny negatives.
template <class Values>
void check_values(const Values& values, long rows, long cols) {
  if (rows != cols) throw std::invalid_argument("P must be a square (n, n) matrix, got " +
                                                std::to_string(rows) + " x " + std::to_string(cols));
  if (rows < 2) throw std::invalid_argument("P must have at least 2 nodes, got " + std::to_string(rows));
  long bad = 0;
  double low = 0.0;
  for (double v : values) {
    if (!std::isfinite(v)) ++bad;
    else low = std::min(low, v);
  }
  if (bad) throw std::invalid_argument("P holds " + std::to_string(bad) +
      " NaN/Inf entries: the attention engine produced invalid numbers (check the model file, its "
      "precision, and the input image)");
  if (low < -1e-6) throw std::invalid_argument("P has negative entries (min " + fmt(low) +
                                               "); it must be a transition matrix");
}

void check_rows(const Vector& rows) {
  double worst = -1.0;
  long at = -1;
  for (long i = 0; i < rows.size(); ++i)
    if (rows[i] > 0 && std::abs(rows[i] - 1.0) > worst) worst = std::abs(rows[i] - 1.0), at = i;
  if (worst > defaults::kRowTol)
    throw std::invalid_argument("rows of P must sum to 1 (a row-stochastic transition matrix); row " +
                                std::to_string(at) + " sums to " + fmt(rows[at]) +
                                ". Normalise the rows before cutting.");
}

Vector inverse_or_zero(const Vector& rows) {
  return rows.unaryExpr([](double r) { return r > 0 ? 1.0 / r : 0.0; });
}

template <class Matrix>
Matrix matrix_power(const Matrix& P, int t) {
  // Repeated squaring: log2(t) products instead of t - 1.
  Matrix result, base = P;
  bool have = false;
  while (true) {
    if (t & 1) {
      if (have) result = Matrix(result * base);
      else result = base, have = true;
    }
    t >>= 1;
    if (!t) break;
    base = Matrix(base * base);
  }
  return result;
}

// Spectra operator for y = P^T x without forming P^T.
struct DenseTransposeProd {
  using Scalar = double;
  const Dense& P;
  Eigen::Index rows() const { return P.rows(); }
  Eigen::Index cols() const { return P.cols(); }
  void perform_op(const double* x, double* y) const {
    Eigen::Map<Vector>(y, P.rows()).noalias() = P.transpose() * Eigen::Map<const Vector>(x, P.rows());
  }
};

struct SparseTransposeProd {
  using Scalar = double;
  const Sparse& P;
  Eigen::Index rows() const { return P.rows(); }
  Eigen::Index cols() const { return P.cols(); }
  void perform_op(const double* x, double* y) const {
    Eigen::Map<Vector>(y, P.rows()).noalias() = P.transpose() * Eigen::Map<const Vector>(x, P.rows());
  }
};

template <class Matrix, class Op>
Vector stationary_impl(const Matrix& P) {
  const long n = P.rows();
  if (n <= defaults::kStationaryDenseMax) {  // tiny: the dense eigenproblem is exact and cheap
    Eigen::EigenSolver<Dense> es(Dense(P).transpose());
    Eigen::Index best;
    es.eigenvalues().real().maxCoeff(&best);
    Vector cand = es.eigenvectors().col(best).real().cwiseAbs();
    return cand / cand.sum();
  }
  Vector pi = Vector::Constant(n, 1.0 / n);
  // Power iteration first (enough when the walk mixes fast), Arnoldi when it does not.
  for (int it = 0; it < defaults::kStationaryPowerIter; ++it) {
    Vector next = P.transpose() * pi;
    const double s = next.sum();
    if (s <= 0) break;
    next /= s;
    if ((next - pi).cwiseAbs().sum() < defaults::kStationaryTol) return next;
    pi = next;
  }
  Op op{P};
  const int ncv = static_cast<int>(std::min<long>(n - 1, defaults::kStationaryNcv));
  try {
    Spectra::GenEigsSolver<Op> solver(op, 1, ncv);
    Vector v0 = pi.array() + 1e-3 / n;
    solver.init(v0.data());
    solver.compute(Spectra::SortRule::LargestReal, 1000, defaults::kStationaryTol);
    if (solver.info() == Spectra::CompInfo::Successful) {
      Vector cand = solver.eigenvectors().col(0).real().cwiseAbs();
      if (cand.sum() > 0) return cand / cand.sum();
    }
  } catch (const std::exception&) {
    // Fall through to the last power iterate, as the Python runtime does.
  }
  return pi;
}

Vector checked_stationary(const Vector& given, long n) {
  if (given.size() != n || !given.allFinite() || (given.array() < 0).any() || given.sum() <= 0)
    throw std::invalid_argument("stationary must be a non-negative finite vector of length " +
                                std::to_string(n));
  return given / given.sum();
}

}  // namespace

Dense check_transition_matrix(Dense P) {
  check_values(P.reshaped(), P.rows(), P.cols());
  P = P.cwiseMax(0.0);
  const Vector rows = P.rowwise().sum();
  check_rows(rows);
  return inverse_or_zero(rows).asDiagonal() * P;
}

Sparse check_transition_matrix(Sparse P) {
  P.makeCompressed();
  check_values(Eigen::Map<const Vector>(P.valuePtr(), P.nonZeros()), P.rows(), P.cols());
  for (Eigen::Index k = 0; k < P.nonZeros(); ++k) P.valuePtr()[k] = std::max(P.valuePtr()[k], 0.0);
  const Vector rows = P * Vector::Ones(P.cols());
  check_rows(rows);
  return Sparse(inverse_or_zero(rows).asDiagonal() * P);
}

Vector stationary_distribution(const Dense& P) { return stationary_impl<Dense, DenseTransposeProd>(P); }
Vector stationary_distribution(const Sparse& P) { return stationary_impl<Sparse, SparseTransposeProd>(P); }

Affinity affinity(const Dense& P_in, const CutOptions& opt, const Vector& stationary) {
  opt.validate();
  const Dense P = check_transition_matrix(P_in);
  const Dense Pt = opt.power != 1 ? matrix_power(P, opt.power) : P;
  Affinity out;
  if (opt.mode == "walk") {
    const Vector pi = stationary.size() ? checked_stationary(stationary, P.rows()) : stationary_distribution(P);
    const Dense flow = pi.asDiagonal() * Pt;
    out.dense = (flow + flow.transpose()) * 0.5;
    return out;
  }
  if (opt.mode == "dot") {
    out.dense = Pt * Pt.transpose();
    return out;
  }
  const Vector norms = Pt.rowwise().norm();
  const Dense Fn = norms.unaryExpr([](double v) { return v > 0 ? 1.0 / v : 1.0; }).asDiagonal() * Pt;
  out.dense = (Fn * Fn.transpose()).cwiseMax(0.0);
  if (opt.exponent != 1.0) out.dense = out.dense.array().pow(opt.exponent).matrix();
  return out;
}

Affinity affinity(const Sparse& P_in, const CutOptions& opt, const Vector& stationary) {
  opt.validate();
  const Sparse P = check_transition_matrix(P_in);
  if (opt.mode != "walk") {  // F F^T of a walk is dense anyway; the Python runtime densifies too
    Affinity dense = affinity(Dense(P), CutOptions{opt}, stationary);
    return dense;
  }
  const Sparse Pt = opt.power != 1 ? matrix_power(P, opt.power) : P;
  const Vector pi = stationary.size() ? checked_stationary(stationary, P.rows()) : stationary_distribution(P);
  const Sparse flow = pi.asDiagonal() * Pt;
  Affinity out;
  out.sparse = true;
  out.csr = (flow + Sparse(flow.transpose())) * 0.5;
  out.csr.makeCompressed();
  return out;
}

}  // namespace walkcut
