// fastreweight: the CUDA kernels behind the ops' entry points (cuda/register.cpp), called after the
// inputs were checked and on the inputs' device.  Outputs are allocated here (at::empty) and every
// element is written.
#pragma once

#include "checks.h"

#include <ATen/core/Tensor.h>

namespace fbr_cuda {

constexpr int kMaxLayers = 8;  // layers per call (the kernel's parameter block holds this many)

// S (B x C, the accumulation dtype): the pairwise streamed class similarity.
at::Tensor pairwise_similarity(const fbr::Shape& s, at::TensorList xs, at::TensorList zs, at::TensorList mus,
                               at::TensorList es, at::TensorList fs, const at::Tensor& clean_y,
                               const at::Tensor& class_weight, bool cosine);
// d (B): the FBR epilogue of every row of S (one thread per row).
at::Tensor fbr_epilogue(const fbr::Shape& s, const at::Tensor& S, const at::Tensor& y, const at::Tensor& class_weight,
                        fbr::Shift sh, double alpha);

}  // namespace fbr_cuda
