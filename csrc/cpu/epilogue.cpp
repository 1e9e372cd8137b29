// fastreweight: the row epilogues on the CPU — the FBR score of each row of S (SPEC §3.4), the
// Reweighter update (§3.6), the loss coefficients of the "weight_sum" reduction, the fused
// scores + update + coefficients of fbr_reweight_prototype, and the published per-batch weight rule.
// Entry points and input checks: register.cpp.
#include "cpu/kernels.h"
#include "fbr_row.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace fbr_cpu {

// d_i = fbr_row(S_i) for every row (SPEC §3.4), in S's dtype.
at::Tensor fbr_epilogue(const at::Tensor& S, const at::Tensor& y, const at::Tensor& class_weight, fbr::Shift sh,
                        double alpha) {
  const int64_t B = S.size(0), C = S.size(1);
  at::Tensor out = at::empty({B}, S.options());
  at::Tensor Sc = S.contiguous();
  at::Tensor yc = y.contiguous();
  at::Tensor w = class_weight.contiguous();
  const int64_t* yp = yc.data_ptr<int64_t>();
  if (S.scalar_type() == at::kDouble) {
    const double *Sp = Sc.data_ptr<double>(), *wp = w.data_ptr<double>();
    double* op_ = out.data_ptr<double>();
    at::parallel_for(0, B, 256, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) op_[i] = fbr::fbr_row<double>(Sp + i * C, wp, C, yp[i], int(sh), alpha);
    });
  } else {
    const float *Sp = Sc.data_ptr<float>(), *wp = w.data_ptr<float>();
    float* op_ = out.data_ptr<float>();
    const float a = static_cast<float>(alpha);
    at::parallel_for(0, B, 256, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) op_[i] = fbr::fbr_row<float>(Sp + i * C, wp, C, yp[i], int(sh), a);
    });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Reweighter update (SPEC §3.6) in one pass, in place:
//   r^ = r / (mean|r| + eps)  (normalize_update="mean_abs"; "none": r^ = r),
//   new_i = clip(w[idx_i] + lr * r^_i, 0, 1);  w[idx_i] <- new_i  (a repeated index: the last wins).
// Every index is bounds-checked here (a bad index raises; it never writes out of bounds).
// ---------------------------------------------------------------------------------------------
template <typename T>
static void update_rows(const char* op, T* w, int64_t N, const int64_t* idx, const T* r, int64_t B,
                        double lr, bool mean_abs, double eps, T* out) {
  T denom = T(1);
  if (mean_abs && B > 0) {
    T sum = T(0);
    for (int64_t i = 0; i < B; ++i) sum += std::abs(r[i]);
    denom = sum / static_cast<T>(B) + static_cast<T>(eps);
  }
  const T lr_t = static_cast<T>(lr);
  for (int64_t i = 0; i < B; ++i) {
    const int64_t j = idx[i];
    TORCH_CHECK(j >= 0 && j < N, "fastreweight::", op, ": idx holds ", j, " at position ", i,
                "; indices must lie in [0, ", N, ")");
    const T step = mean_abs ? r[i] / denom : r[i];
    out[i] = std::min(std::max(w[j] + lr_t * step, T(0)), T(1));
  }
  for (int64_t i = 0; i < B; ++i) w[idx[i]] = out[i];
}

at::Tensor reweighter_update(const char* op, at::Tensor& weights, const at::Tensor& idx, const at::Tensor& scores,
                             double lr, bool mean_abs, double eps) {
  const int64_t B = idx.size(0), N = weights.size(0);
  at::Tensor out = at::empty({B}, weights.options());
  at::Tensor ic = idx.contiguous();
  at::Tensor rc = scores.to(weights.scalar_type()).contiguous();
  if (weights.scalar_type() == at::kDouble)
    update_rows<double>(op, weights.data_ptr<double>(), N, ic.data_ptr<int64_t>(), rc.data_ptr<double>(), B, lr,
                        mean_abs, eps, out.data_ptr<double>());
  else
    update_rows<float>(op, weights.data_ptr<float>(), N, ic.data_ptr<int64_t>(), rc.data_ptr<float>(), B, lr,
                       mean_abs, eps, out.data_ptr<float>());
  return out;
}

// coef_i = w_i / max(sum_j w_j, loss_eps): the weights of the "weight_sum" loss reduction
// (weights.weighted_loss), so that the training step's loss is one dot product with the losses.
// The sum runs in the weights' dtype, left to right.
template <typename T>
static void coefficient_rows(const T* w, int64_t B, double loss_eps, T* coef) {
  T sum = T(0);
  for (int64_t i = 0; i < B; ++i) sum += w[i];
  const T denom = std::max(sum, static_cast<T>(loss_eps));
  for (int64_t i = 0; i < B; ++i) coef[i] = w[i] / denom;
}

// Scores, the Reweighter update and the loss coefficients in one op (prototype strategy): the
// training step of the stateful recipe, one dispatch instead of two plus three for the loss's
// normalisation.  Returns (scores, the batch's new weights, their loss coefficients).
std::tuple<at::Tensor, at::Tensor, at::Tensor> reweight_prototype(
    const char* op, const ProtoShape& p, at::TensorList xs, at::TensorList mus, at::TensorList es,
    at::TensorList protos, const at::Tensor& class_weight, bool cosine, const at::Tensor& y, fbr::Shift sh,
    double alpha, at::Tensor& weights, const at::Tensor& idx, double lr, bool mean_abs, double eps,
    double loss_eps) {
  at::Tensor d = prototype_scores(p, xs, mus, es, protos, class_weight, cosine, y, sh, alpha);
  at::Tensor w = reweighter_update(op, weights, idx, d, lr, mean_abs, eps);
  at::Tensor coef = at::empty({p.B}, w.options());
  if (w.scalar_type() == at::kDouble)
    coefficient_rows<double>(w.data_ptr<double>(), p.B, loss_eps, coef.data_ptr<double>());
  else
    coefficient_rows<float>(w.data_ptr<float>(), p.B, loss_eps, coef.data_ptr<float>());
  return {d, w, coef};
}

// ---------------------------------------------------------------------------------------------
// The published per-batch weight rule (SPEC §3.6), written to match reference.threshold_weights:
//   no negative score: w = 1 everywhere; else eta = 0.5 / min_{r_j < 0} |r_j|,
//   w_i = clip(0.5 + eta r_i, 0, 1), then 0 where w_i <= 0.5 (NaN stays NaN, as torch.clamp).
// ---------------------------------------------------------------------------------------------
template <typename T>
static void threshold_rule(const T* r, int64_t B, T* w) {
  bool any_neg = false;
  T min_neg_abs = std::numeric_limits<T>::infinity();
  for (int64_t i = 0; i < B; ++i)
    if (r[i] < T(0)) {
      any_neg = true;
      min_neg_abs = std::min(min_neg_abs, -r[i]);
    }
  if (!any_neg) {
    for (int64_t i = 0; i < B; ++i) w[i] = T(1);
    return;
  }
  const T eta = T(0.5) / min_neg_abs;
  for (int64_t i = 0; i < B; ++i) {
    T v = T(0.5) + eta * r[i];
    if (!std::isnan(v)) v = std::min(std::max(v, T(0)), T(1));
    w[i] = v <= T(0.5) ? T(0) : v;
  }
}

at::Tensor threshold_weights(const at::Tensor& scores) {
  const int64_t B = scores.size(0);
  at::Tensor out = at::empty({B}, scores.options());
  at::Tensor rc = scores.contiguous();
  if (scores.scalar_type() == at::kDouble)
    threshold_rule<double>(rc.data_ptr<double>(), B, out.data_ptr<double>());
  else
    threshold_rule<float>(rc.data_ptr<float>(), B, out.data_ptr<float>());
  return out;
}

}  // namespace fbr_cpu
