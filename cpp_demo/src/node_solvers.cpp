// Node eigensolvers of the cut engine: see node_solvers.hpp.
#include "node_solvers.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace walkcut::detail {

namespace {

// Eigenpairs of the symmetric tridiagonal matrix with diagonal `alpha` and off-diagonal `beta`
// (eigenvalues ascending, as scipy's eigh_tridiagonal).
void tridiagonal_eigen(const std::vector<double>& alpha, const std::vector<double>& beta, Vector* theta,
                       Dense* S) {
  const int n = static_cast<int>(alpha.size());
  if (n == 1) {
    *theta = Vector::Constant(1, alpha[0]);
    *S = Dense::Ones(1, 1);
    return;
  }
  Eigen::SelfAdjointEigenSolver<Dense> es;
  es.computeFromTridiagonal(Eigen::Map<const Vector>(alpha.data(), n), Eigen::Map<const Vector>(beta.data(), n - 1),
                            Eigen::ComputeEigenvectors);
  if (es.info() != Eigen::Success) throw std::runtime_error("tridiagonal eigensolver failed");
  *theta = es.eigenvalues();
  *S = es.eigenvectors();
}

// Columns per panel of the banded Cholesky: wide enough for the dense kernels, small against the
// band (96 at R = 32, 192 at R = 64 with the default radius). C++ only.
constexpr int kPanelColumns = 48;

}  // namespace

LanczosResult lanczos_top(const Apply& op, const Vector& u, const Vector& v0, double tol, int max_steps, int n_ritz,
                          int check, bool relative) {
  const int m = static_cast<int>(v0.size());
  const int steps = std::max(1, std::min(max_steps, m - 1));
  Dense V(m, steps + 1);  // Lanczos basis, one vector per column
  Vector q = v0 - u * u.dot(v0);
  const double q_norm = q.norm();
  if (!(q_norm > 0) || !std::isfinite(q_norm)) throw std::runtime_error("Lanczos start vector is zero or not finite");
  V.col(0) = q / q_norm;
  std::vector<double> alpha, beta;
  Vector w(m), theta;
  Dense S;
  LanczosResult out;
  for (int j = 0; j < steps; ++j) {
    op(V.col(j), w);
    const double a = V.col(j).dot(w);
    alpha.push_back(a);
    const auto basis = V.leftCols(j + 1);
    for (int pass = 0; pass < 2; ++pass) {  // full reorthogonalisation, twice (Kahan-Parlett)
      w.noalias() -= basis * (basis.transpose() * w);
      w -= u * u.dot(w);
    }
    const double b = w.norm();
    const double scale = relative ? std::max(std::abs(a), 1e-300) : 1.0;  // breakdown judged against the operator
    const bool last = j + 1 == steps || b < 1e-12 * scale;
    if ((j + 1) % check == 0 || last) {
      tridiagonal_eigen(alpha, beta, &theta, &S);
      const int t = static_cast<int>(alpha.size()) - 1;
      if (b * std::abs(S(t, t)) < tol * (relative ? std::abs(theta[t]) : 1.0) || b < 1e-12 * scale) {
        out.converged = true;
        break;
      }
    }
    if (last) break;
    beta.push_back(b);
    V.col(j + 1) = w / b;
  }
  const int n = static_cast<int>(alpha.size());
  beta.resize(n - 1);
  tridiagonal_eigen(alpha, beta, &theta, &S);
  const int k = std::min(n_ritz, n);
  out.ritz = V.leftCols(n) * S.rightCols(k).rowwise().reverse();  // descending Ritz values
  out.v = out.ritz.col(0);
  out.steps = n;
  return out;
}

bool BandedCholesky::factor(const Eigen::SparseMatrix<double>& A, int bandwidth) {
  const int m = static_cast<int>(A.rows());
  const int b = bandwidth;
  panels_.clear();
  for (int first = 0; first < m; first += kPanelColumns) {
    Panel p;
    p.first = first;
    p.cols = std::min(kPanelColumns, m - first);
    p.L = Dense::Zero(std::min(m, first + p.cols + b) - first, p.cols);
    panels_.push_back(std::move(p));
  }
  for (int j = 0; j < m; ++j) {  // scatter the lower band
    Panel& p = panels_[j / kPanelColumns];
    for (Eigen::SparseMatrix<double>::InnerIterator it(A, j); it; ++it)
      if (it.row() >= j && it.row() - j <= b) p.L(it.row() - p.first, j - p.first) = it.value();
  }
  for (size_t k = 0; k < panels_.size(); ++k) {
    Panel& p = panels_[k];
    const int c = p.cols, below = static_cast<int>(p.L.rows()) - c;
    auto diag = p.L.topRows(c);
    Eigen::LLT<Eigen::Ref<Dense>> llt(diag);  // in place: the lower triangle becomes L_kk
    if (llt.info() != Eigen::Success) return false;
    if (below == 0) continue;
    auto B = p.L.bottomRows(below);
    diag.triangularView<Eigen::Lower>().transpose().solveInPlace<Eigen::OnTheRight>(B);  // B <- B L_kk^-T
    // Trailing update A_ij -= B_i B_j^T, panel by panel, for the rows of B (global p.first + c + r).
    for (size_t l = k + 1; l < panels_.size() && panels_[l].first < p.first + c + below; ++l) {
      Panel& q = panels_[l];
      const int r0 = q.first - (p.first + c);  // B's row at q's first column
      const int nr = below - r0, nc = std::min(q.cols, nr);
      q.L.topLeftCorner(nr, nc).noalias() -= B.middleRows(r0, nr) * B.middleRows(r0, nc).transpose();
    }
  }
  return true;
}

void BandedCholesky::solve_in_place(Vector& x) const {
  for (const Panel& p : panels_) {  // L z = x
    auto seg = x.segment(p.first, p.cols);
    p.L.topRows(p.cols).triangularView<Eigen::Lower>().solveInPlace(seg);
    const int below = static_cast<int>(p.L.rows()) - p.cols;
    if (below) x.segment(p.first + p.cols, below).noalias() -= p.L.bottomRows(below) * seg;
  }
  for (auto it = panels_.rbegin(); it != panels_.rend(); ++it) {  // L^T x = z
    const Panel& p = *it;
    auto seg = x.segment(p.first, p.cols);
    const int below = static_cast<int>(p.L.rows()) - p.cols;
    if (below) seg.noalias() -= p.L.bottomRows(below).transpose() * x.segment(p.first + p.cols, below);
    p.L.topRows(p.cols).triangularView<Eigen::Lower>().transpose().solveInPlace(seg);
  }
}

ShiftInvert::ShiftInvert(const Sparse& W, const Vector& inv_sqrt_d, const Vector& u, double sigma) : u_(u) {
  const int m = static_cast<int>(W.rows());
  // A = (1 + sigma) I - D^-1/2 W D^-1/2, column-major (W is symmetric, so is A).
  Eigen::SparseMatrix<double> A = -(inv_sqrt_d.asDiagonal() * W * inv_sqrt_d.asDiagonal());
  Eigen::SparseMatrix<double> I(m, m);
  I.setIdentity();
  A += (1.0 + sigma) * I;
  A.makeCompressed();
  int bandwidth = 0;
  for (int j = 0; j < A.outerSize(); ++j)
    for (Eigen::SparseMatrix<double>::InnerIterator it(A, j); it; ++it)
      bandwidth = std::max(bandwidth, std::abs(static_cast<int>(it.row()) - j));
  // Too wide a band: not factored (ok_ stays false), the caller uses Spectra's Lanczos on M.
  if (static_cast<double>(bandwidth + 1) * m > defaults::kShiftInvertBandedMaxEntries) return;
  banded_ = band_.factor(A, bandwidth);
  if (banded_) {
    ok_ = true;
    return;
  }
  // A non-positive pivot in rounding: Eigen's LDL^T (AMD ordering) needs no square roots.
  ldlt_ = std::make_unique<Eigen::SimplicialLDLT<Eigen::SparseMatrix<double>, Eigen::Lower, Eigen::AMDOrdering<int>>>(A);
  ok_ = ldlt_->info() == Eigen::Success;
}

void ShiftInvert::apply(const Vector& x, Vector& y) const {
  Vector z = x - u_ * u_.dot(x);
  if (banded_)
    band_.solve_in_place(z);
  else
    z = ldlt_->solve(z);
  y = z - u_ * u_.dot(z);
}

}  // namespace walkcut::detail
