// fastreweight: the CPU kernels behind the ops' entry points (cpu/register.cpp), called after the
// inputs were checked.  Outputs are allocated here (at::empty) and every element is written.
#pragma once

#include "checks.h"

#include <ATen/core/Tensor.h>

#include <tuple>

namespace fbr_cpu {

// --- similarity_pairwise.cpp: the pairwise streamed strategy ------------------------------------
// S (B x C, the accumulation dtype): class-weighted sums of the pair kernel over the clean rows.
at::Tensor pairwise_similarity(const fbr::Shape& s, at::TensorList xs, at::TensorList zs, at::TensorList mus,
                               at::TensorList es, at::TensorList fs, const at::Tensor& clean_y,
                               const at::Tensor& class_weight, bool cosine);

// --- similarity_prototype.cpp: the prototype strategy -------------------------------------------
struct ProtoShape {
  int64_t B = 0, C = 0, L = 0;
  bool grad = false, center = false;
  at::ScalarType acc = at::kFloat;
};

// S (B x C) against the class prototypes (C x d per layer; C x k x d for the gradient kernel).
at::Tensor prototype_similarity(const ProtoShape& p, at::TensorList xs, at::TensorList mus, at::TensorList es,
                                at::TensorList protos, bool cosine);
// d (B): the FBR scores against the prototypes (small calls in one pass with the epilogue).
at::Tensor prototype_scores(const ProtoShape& p, at::TensorList xs, at::TensorList mus, at::TensorList es,
                            at::TensorList protos, const at::Tensor& class_weight, bool cosine, const at::Tensor& y,
                            fbr::Shift sh, double alpha);

// --- epilogue.cpp: row epilogues ------------------------------------------------------------------
// d_i = fbr_row(S_i) for every row, in S's dtype.
at::Tensor fbr_epilogue(const at::Tensor& S, const at::Tensor& y, const at::Tensor& class_weight, fbr::Shift sh,
                        double alpha);
// The Reweighter update in place on weights; returns the batch's new weights (indices bounds-checked).
at::Tensor reweighter_update(const char* op, at::Tensor& weights, const at::Tensor& idx, const at::Tensor& scores,
                             double lr, bool mean_abs, double eps);
// (scores, the batch's new weights, their loss coefficients w / max(sum w, loss_eps)).
std::tuple<at::Tensor, at::Tensor, at::Tensor> reweight_prototype(
    const char* op, const ProtoShape& p, at::TensorList xs, at::TensorList mus, at::TensorList es,
    at::TensorList protos, const at::Tensor& class_weight, bool cosine, const at::Tensor& y, fbr::Shift sh,
    double alpha, at::Tensor& weights, const at::Tensor& idx, double lr, bool mean_abs, double eps,
    double loss_eps);
// The published per-batch weight rule (float32 / float64 scores).
at::Tensor threshold_weights(const at::Tensor& scores);

}  // namespace fbr_cpu
