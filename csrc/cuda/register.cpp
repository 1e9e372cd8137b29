// fastreweight: the CUDA entry points of the ops fastreweight::class_similarity / fbr_scores (schemas
// and fake kernels: fastreweight/csrc_backend/ops.py).  Each checks its inputs (checks.h; every message
// starts with "fastreweight::<op>: <argument>"), guards the device and calls the kernels of
// cuda/similarity_pairwise.cu.
#include "checks.h"
#include "cuda/kernels.h"

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

namespace fbr_cuda {

static void check_cuda(const char* op, const fbr::Shape& s, const at::Tensor& x0) {
  TORCH_CHECK(x0.device().is_cuda(), "fastreweight::", op, ": the CUDA kernel got tensors on ", x0.device());
  TORCH_CHECK(s.L <= kMaxLayers, "fastreweight::", op, ": the CUDA kernels take at most ", kMaxLayers,
              " layers, got ", s.L);
}

static at::Tensor class_similarity_cuda(at::TensorList xs, at::TensorList zs, at::TensorList mus, at::TensorList es,
                                        at::TensorList fs, const at::Tensor& clean_y, const at::Tensor& class_weight,
                                        bool cosine) {
  const char* op = "class_similarity";
  const fbr::Shape s = fbr::check_inputs(op, xs, zs, mus, es, fs, clean_y, class_weight);
  check_cuda(op, s, xs[0]);
  c10::cuda::CUDAGuard guard(xs[0].device());
  return pairwise_similarity(s, xs, zs, mus, es, fs, clean_y, class_weight, cosine);
}

static at::Tensor fbr_scores_cuda(at::TensorList xs, at::TensorList zs, at::TensorList mus, at::TensorList es,
                                  at::TensorList fs, const at::Tensor& clean_y, const at::Tensor& class_weight,
                                  bool cosine, const at::Tensor& y, c10::string_view shift, double alpha) {
  const char* op = "fbr_scores";
  const fbr::Shape s = fbr::check_inputs(op, xs, zs, mus, es, fs, clean_y, class_weight);
  const fbr::Shift sh = fbr::check_epilogue(op, s, y, shift, alpha);
  TORCH_CHECK(y.device() == xs[0].device(), "fastreweight::", op, ": y is on ", y.device(), " but xs[0] is on ",
              xs[0].device(), "; all inputs must be on one device");
  check_cuda(op, s, xs[0]);
  c10::cuda::CUDAGuard guard(xs[0].device());
  at::Tensor S = pairwise_similarity(s, xs, zs, mus, es, fs, clean_y, class_weight, cosine);
  return fbr_epilogue(s, S, y, class_weight, sh, alpha);
}

}  // namespace fbr_cuda

TORCH_LIBRARY_IMPL(fastreweight, CUDA, m) {
  m.impl("class_similarity", &fbr_cuda::class_similarity_cuda);
  m.impl("fbr_scores", &fbr_cuda::fbr_scores_cuda);
}
