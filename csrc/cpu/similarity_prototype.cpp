// fastreweight: the prototype strategy of SPEC §4 on the CPU (fastreweight::class_similarity_prototype /
// fbr_scores_prototype and the scores of fbr_reweight_prototype; entry points and input checks in
// register.cpp).
#include "cpu/kernels.h"
#include "cpu/microkernels.h"
#include "fbr_row.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <limits>
#include <vector>

namespace fbr_cpu {

// ---------------------------------------------------------------------------------------------
// Prototype strategy (SPEC §4): the clean side arrives aggregated by class (memoised by the caller
// across calls with the same clean tensors), so a call costs one small GEMM per layer:
//   feature kernel:  S = sum_l X~_l P_l^T                      with P_l (C x d_l) = A^T Z~_l
//   gradient kernel: S_ic = sum_l E_l,i^T G_l,c X~_l,i          with G_l (C x k_l x d_l)
// (X~ = X - mu, rows scaled to unit norm for cosine, as reference._feature_side / _second_side).
// The GEMMs run through ATen (MKL/oneDNN); what the op saves over the Python reference is the
// dozen separate tensor ops and their dispatch: it matters for small batches, where the whole call
// costs tens of microseconds.
// ---------------------------------------------------------------------------------------------
static at::Tensor rownorm_scaled(const at::Tensor& t) {
  at::Tensor n = at::linalg_vector_norm(t, 2, at::IntArrayRef{1}, false, c10::nullopt);
  const double tiny = t.scalar_type() == at::kDouble ? std::numeric_limits<double>::min()
                                                     : static_cast<double>(std::numeric_limits<float>::min());
  at::Tensor inv = at::where(n > 0, at::reciprocal(n.clamp_min(tiny)), at::zeros({}, n.options()));
  return t * inv.unsqueeze(1);
}

// Small feature-kernel calls (B*C*sum(d) <= kDirectWork) skip the GEMM machinery: four batch rows at
// a time are centred (and for cosine normalised) into a buffer, their C dot products with the
// prototypes are taken in register tiles of 4 rows x 4 classes and, for fbr_scores, the epilogue is
// applied to each finished row.  A training step of a
// small model scores 64 rows against 10 prototypes of 256 features: ~160k multiply-adds, a few
// microseconds, where the ATen path's four tensor ops and their allocations cost several times that.
// Rows are independent and summed in a fixed order: the result does not depend on the thread count.
constexpr int64_t kDirectWork = int64_t(1) << 22;

// out[r * ldo + c] = <x_r, P_c> for R batch rows (x_r = X + r * ldx) and K classes (P_c = P + c * d):
// an R x K tile of vector accumulators, so each loaded vector of x feeds K multiply-adds and each
// loaded vector of P feeds R (one row against one class is load-bound: a load per multiply-add).
// The rows of X are zero-padded to a whole number of vectors (ldx >= that); the last, partial vector
// of each P_c is read through a zero-padded copy.  So every (row, class) pair is summed by the same
// vector operations in the same order whatever tile it falls in — lane-wise over the vector steps
// of k, then the lanes left to right — and a score never depends on the batch size, on where a row
// sits in the batch, or on the thread count.
template <typename T, int R, int K>
static inline __attribute__((always_inline)) void dots_tile(const T* __restrict__ X, int64_t ldx,
                                                            const T* __restrict__ P, int64_t d, T* __restrict__ out,
                                                            int64_t ldo) {
  using V = typename VecOf<T>::V;
  using U = typename VecOf<T>::U;
  constexpr int64_t LN = NR_of<T>::lanes;
  V acc[R][K] = {};
  int64_t k = 0;
  for (; k + LN <= d; k += LN) {
    V xv[R];
    for (int r = 0; r < R; ++r) xv[r] = *reinterpret_cast<const U*>(X + r * ldx + k);
    for (int c = 0; c < K; ++c) {
      const V pv = *reinterpret_cast<const U*>(P + c * d + k);
      for (int r = 0; r < R; ++r) acc[r][c] += xv[r] * pv;
    }
  }
  if (k < d) {  // the partial last vector: x is zero past d, P is read through a zero-padded copy
    V xv[R];
    for (int r = 0; r < R; ++r) xv[r] = *reinterpret_cast<const U*>(X + r * ldx + k);
    for (int c = 0; c < K; ++c) {
      V pv = {};
      for (int64_t j = 0; j < d - k; ++j) pv[j] = P[c * d + k + j];
      for (int r = 0; r < R; ++r) acc[r][c] += xv[r] * pv;
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < K; ++c) out[r * ldo + c] = hsum<T>(acc[r][c]);
}

// out (R x C, row stride ldo): the dot products of R zero-padded rows of X (row stride ldx) with the C
// rows of P (row stride d), classes four at a time, then one at a time.
template <typename T, int R>
static inline __attribute__((always_inline)) void rows_dots_impl(const T* X, int64_t ldx, const T* P, int64_t C,
                                                                 int64_t d, T* out, int64_t ldo) {
  int64_t c = 0;
  for (; c + 4 <= C; c += 4) dots_tile<T, R, 4>(X, ldx, P + c * d, d, out + c, ldo);
  for (; c < C; ++c) dots_tile<T, R, 1>(X, ldx, P + c * d, d, out + c, ldo);
}
// four rows at a time (4 x 4 tiles: 16 accumulators, 8 loads per 16 multiply-adds), or one
FBR_CLONES void rows_dots4_f32(const float* X, int64_t ldx, const float* P, int64_t C, int64_t d, float* out,
                               int64_t ldo) {
  rows_dots_impl<float, 4>(X, ldx, P, C, d, out, ldo);
}
FBR_CLONES void rows_dots4_f64(const double* X, int64_t ldx, const double* P, int64_t C, int64_t d, double* out,
                               int64_t ldo) {
  rows_dots_impl<double, 4>(X, ldx, P, C, d, out, ldo);
}
FBR_CLONES void rows_dots1_f32(const float* X, int64_t ldx, const float* P, int64_t C, int64_t d, float* out,
                               int64_t ldo) {
  rows_dots_impl<float, 1>(X, ldx, P, C, d, out, ldo);
}
FBR_CLONES void rows_dots1_f64(const double* X, int64_t ldx, const double* P, int64_t C, int64_t d, double* out,
                               int64_t ldo) {
  rows_dots_impl<double, 1>(X, ldx, P, C, d, out, ldo);
}
static inline void rows_dots(int rows, const float* X, int64_t ldx, const float* P, int64_t C, int64_t d, float* out,
                             int64_t ldo) {
  if (rows == 4)
    rows_dots4_f32(X, ldx, P, C, d, out, ldo);
  else
    rows_dots1_f32(X, ldx, P, C, d, out, ldo);
}
static inline void rows_dots(int rows, const double* X, int64_t ldx, const double* P, int64_t C, int64_t d,
                             double* out, int64_t ldo) {
  if (rows == 4)
    rows_dots4_f64(X, ldx, P, C, d, out, ldo);
  else
    rows_dots1_f64(X, ldx, P, C, d, out, ldo);
}

static bool direct_ok(const ProtoShape& p, at::TensorList xs) {
  if (p.grad) return false;
  int64_t dsum = 0;
  for (const at::Tensor& x : xs) {
    if (x.scalar_type() != p.acc || (x.size(1) > 1 && x.stride(1) != 1)) return false;
    dsum += x.size(1);
  }
  return p.B * p.C * std::max<int64_t>(dsum, 1) <= kDirectWork;
}

// S_out (B x C) and/or d_out (B): written for every row.
template <typename T>
static void prototype_direct(const ProtoShape& p, at::TensorList xs, at::TensorList mus, at::TensorList protos,
                             bool cosine, const int64_t* y, const T* w, int shift, T alpha, T* S_out, T* d_out) {
  const int64_t B = p.B, C = p.C, L = p.L;
  std::vector<const T*> X(L), MU(L), P(L);
  std::vector<int64_t> D(L), XS(L);
  std::vector<at::Tensor> keep;
  int64_t dmax = 1, dsum = 0;
  for (int64_t l = 0; l < L; ++l) {
    X[l] = xs[l].data_ptr<T>();
    XS[l] = xs[l].stride(0);
    D[l] = xs[l].size(1);
    keep.push_back(protos[l].contiguous());
    P[l] = keep.back().data_ptr<T>();
    if (p.center) {
      keep.push_back(mus[l].contiguous());
      MU[l] = keep.back().data_ptr<T>();
    } else {
      MU[l] = nullptr;
    }
    dmax = std::max(dmax, D[l]);
    dsum += D[l];
  }
  // rows in tiles of four (a chunk's last rows one at a time); a row's scores do not depend on its tile
  constexpr int64_t RT = 4;
  const int64_t grain = std::max<int64_t>(RT, (int64_t(1) << 16) / std::max<int64_t>(1, C * dsum));
  // the centred rows are zero-padded to whole vectors (rows_dots reads them a vector at a time)
  constexpr int64_t LN = NR_of<T>::lanes;
  const int64_t ldx = (dmax + LN - 1) / LN * LN;
  at::parallel_for(0, B, grain, [&](int64_t begin, int64_t end) {
    std::vector<T> xt(RT * ldx, T(0)), rows(RT * C), part(RT * C);
    for (int64_t i0 = begin; i0 < end;) {
      const int n = end - i0 >= RT ? int(RT) : 1;
      for (int64_t l = 0; l < L; ++l) {
        for (int r = 0; r < n; ++r)
          center_row<T>(X[l] + (i0 + r) * XS[l], D[l], MU[l], cosine, xt.data() + r * ldx);
        if (D[l] < dmax)  // a narrower layer after a wider one: zero what the wider one left past D[l]
          for (int r = 0; r < n; ++r) std::fill(xt.data() + r * ldx + D[l], xt.data() + (r + 1) * ldx, T(0));
        T* dst = l == 0 ? rows.data() : part.data();
        rows_dots(n, xt.data(), ldx, P[l], C, D[l], dst, C);
        if (l > 0)
          for (int64_t j = 0; j < n * C; ++j) rows[j] += part[j];
      }
      for (int r = 0; r < n; ++r) {
        const int64_t i = i0 + r;
        const T* row = rows.data() + r * C;
        if (S_out) std::copy(row, row + C, S_out + i * C);
        if (d_out) d_out[i] = fbr::fbr_row<T>(row, w, C, y[i], shift, alpha);
      }
      i0 += n;
    }
  });
}

at::Tensor prototype_similarity(const ProtoShape& p, at::TensorList xs, at::TensorList mus, at::TensorList es,
                                at::TensorList protos, bool cosine) {
  if (direct_ok(p, xs)) {
    at::Tensor S = at::empty({p.B, p.C}, xs[0].options().dtype(p.acc));
    if (p.acc == at::kDouble)
      prototype_direct<double>(p, xs, mus, protos, cosine, nullptr, nullptr, 0, 0.0, S.data_ptr<double>(), nullptr);
    else
      prototype_direct<float>(p, xs, mus, protos, cosine, nullptr, nullptr, 0, 0.0f, S.data_ptr<float>(), nullptr);
    return S;
  }
  at::Tensor S;
  for (int64_t l = 0; l < p.L; ++l) {
    at::Tensor x = xs[l].to(p.acc);
    if (p.center) x = x - mus[l];
    if (cosine) x = rownorm_scaled(x);
    at::Tensor term;
    if (!p.grad) {
      term = at::mm(x, protos[l].t());
    } else {
      at::Tensor e = es[l].to(p.acc);
      if (cosine) e = rownorm_scaled(e);
      const int64_t k = e.size(1), d = x.size(1);
      // T[i, c, :] = G_c x~_i (B x C x k), then S_ic = <T[i, c, :], e_i>
      at::Tensor T = at::mm(x, protos[l].reshape({p.C * k, d}).t()).view({p.B, p.C, k});
      term = at::bmm(T, e.unsqueeze(2)).squeeze(2);
    }
    S = l == 0 ? term : S + term;
  }
  return S.contiguous();
}

at::Tensor prototype_scores(const ProtoShape& p, at::TensorList xs, at::TensorList mus, at::TensorList es,
                            at::TensorList protos, const at::Tensor& class_weight, bool cosine, const at::Tensor& y,
                            fbr::Shift sh, double alpha) {
  if (direct_ok(p, xs)) {  // similarity and epilogue in one pass over the rows
    at::Tensor out = at::empty({p.B}, xs[0].options().dtype(p.acc));
    at::Tensor yc = y.contiguous(), w = class_weight.contiguous();
    if (p.acc == at::kDouble)
      prototype_direct<double>(p, xs, mus, protos, cosine, yc.data_ptr<int64_t>(), w.data_ptr<double>(), int(sh),
                               alpha, nullptr, out.data_ptr<double>());
    else
      prototype_direct<float>(p, xs, mus, protos, cosine, yc.data_ptr<int64_t>(), w.data_ptr<float>(), int(sh),
                              static_cast<float>(alpha), nullptr, out.data_ptr<float>());
    return out;
  }
  at::Tensor S = prototype_similarity(p, xs, mus, es, protos, cosine);
  return fbr_epilogue(S, y, class_weight, sh, alpha);
}

}  // namespace fbr_cpu
