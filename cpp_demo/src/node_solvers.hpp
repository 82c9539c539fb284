// Node eigensolvers of the cut method (runtime/cuts/krylov.py, runtime/cuts/sparse.py): Lanczos with
// full reorthogonalisation stopped at the first Ritz residual under tolerance, and the shift-invert
// operator of sparse (pixel) graphs. Internal to the library (not installed with include/).
#pragma once

#include <Eigen/Dense>
#include <Eigen/Sparse>
#include <Eigen/SparseCholesky>

#include <functional>
#include <memory>
#include <vector>

#include "walkcut/cuts.hpp"

namespace walkcut::detail {

// y = op(x) for a symmetric operator on vectors of the node's size.
using Apply = std::function<void(const Vector& x, Vector& y)>;

struct LanczosResult {
  Vector v;       // (m,) top Ritz vector (unit norm, orthogonal to u)
  Dense ritz;     // (m, k) top k Ritz vectors, descending Ritz values (k = n_ritz, or fewer steps)
  bool converged = false;
  int steps = 0;  // operator applications
};

// Top eigenpair of `op` on the complement of the unit vector `u` (krylov.py lanczos_fiedler): Lanczos
// with full reorthogonalisation (twice, Kahan-Parlett) from `v0`; stops when the top Ritz pair's
// residual beta_j |s_j| is below `tol` (times the top Ritz value when `relative`), checked every
// `check` steps, or at an invariant subspace; at most min(max_steps, m - 1) steps.
LanczosResult lanczos_top(const Apply& op, const Vector& u, const Vector& v0, double tol, int max_steps,
                          int n_ritz, int check, bool relative);

// Cholesky factor of a symmetric positive definite band matrix (lower band `bandwidth`), computed in
// panels of columns with dense Eigen kernels (the algorithm of LAPACK's pbtrf). A pixel graph in
// row-major node order has a band of about radius x R; at that width this is 10-30x faster than
// Eigen's SimplicialLDLT, whose column-by-column factorisation cannot use dense kernels
// (bench/RESULTS_cpp.md, "Cut engine v2 in C++").
class BandedCholesky {
 public:
  // Factors `A` (symmetric; only entries with 0 <= i - j <= bandwidth are read). Returns false when
  // a pivot is not positive (not positive definite in rounding).
  bool factor(const Eigen::SparseMatrix<double>& A, int bandwidth);
  void solve_in_place(Vector& x) const;  // x <- A^-1 x

 private:
  struct Panel {
    int first = 0, cols = 0;  // columns [first, first + cols)
    Dense L;                  // rows [first, first + L.rows()) of those columns; top block lower-triangular
  };
  std::vector<Panel> panels_;
};

// x -> Q (L + sigma I)^-1 Q x with L = I - D^-1/2 W D^-1/2 and Q = I - u u^T (sparse.py _ShiftInvert).
// L + sigma I is factored by BandedCholesky when its band in the node's order is narrow enough
// (kShiftInvertBandedMaxEntries; Eigen's SimplicialLDLT with AMD ordering if a pivot is not positive
// in rounding). Wider bands are not factored (ok() is false; the caller falls back to Spectra): the
// runtime uses SuperLU there, but Eigen's SimplicialLDLT took 74 s on a 16384-node pixel graph
// (R = 128, band too wide), 5x SuperLU, and 1.2 s against 0.11 s for BandedCholesky at R = 64.
class ShiftInvert {
 public:
  ShiftInvert(const Sparse& W, const Vector& inv_sqrt_d, const Vector& u, double sigma);
  bool ok() const { return ok_; }          // false: the factorisation failed
  bool banded() const { return banded_; }  // which factorisation is used
  void apply(const Vector& x, Vector& y) const;

 private:
  Vector u_;
  bool ok_ = false, banded_ = false;
  BandedCholesky band_;
  std::unique_ptr<Eigen::SimplicialLDLT<Eigen::SparseMatrix<double>, Eigen::Lower, Eigen::AMDOrdering<int>>> ldlt_;
};

}  // namespace walkcut::detail
