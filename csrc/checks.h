// fastreweight: input checks shared by the CPU (cpu/register.cpp) and CUDA (cuda/register.cpp) entry
// points of the custom ops; the schemas are in fastreweight/csrc_backend/ops.py, e.g.
//
//   fastreweight::class_similarity(Tensor[] xs, Tensor[] zs, Tensor[] mus, Tensor[] es, Tensor[] fs,
//                                  Tensor clean_y, Tensor class_weight, bool cosine) -> Tensor  (B x C)
//   fastreweight::fbr_scores(... same ..., Tensor y, str shift, float alpha) -> Tensor          (B)
//
// One entry of xs/zs (and es/fs for the gradient kernel) per layer; mus is empty (no centering) or
// holds one centering mean per layer in the accumulation dtype.  The accumulation dtype (and the
// output dtype) is float64 for float64 inputs and float32 otherwise.  See SPEC.md §3-4.
//
// Every message starts with "fastreweight::<op>: <argument>"; tests/test_cpp_backend.py matches them.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <string>
#include <vector>

namespace fbr {

enum class Shift : int { Second = 0, Max = 1, Mean = 2, None = 3 };

struct Shape {
  int64_t B = 0, M = 0, C = 0, L = 0;
  bool grad = false;    // gradient kernel (es/fs given)
  bool center = false;  // mus given
  at::ScalarType in_dtype = at::kFloat;
  at::ScalarType acc_dtype = at::kFloat;
};

inline std::string shape_str(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) {
    if (i) s += ", ";
    s += std::to_string(t.size(i));
  }
  return s + "]";
}

inline std::string nm(const char* base, size_t l) { return std::string(base) + "[" + std::to_string(l) + "]"; }

inline bool is_float_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

// Checks every argument; throws c10::Error (RuntimeError in Python) with a message naming it.
inline Shape check_inputs(const char* op, at::TensorList xs, at::TensorList zs, at::TensorList mus,
                          at::TensorList es, at::TensorList fs, const at::Tensor& clean_y,
                          const at::Tensor& class_weight) {
  Shape s;
  TORCH_CHECK(!xs.empty(), "fastreweight::", op, ": xs must hold at least one layer, got an empty list");
  s.L = static_cast<int64_t>(xs.size());
  TORCH_CHECK(zs.size() == xs.size(), "fastreweight::", op, ": zs must hold one tensor per layer like xs (",
              xs.size(), "), got ", zs.size());
  TORCH_CHECK(es.size() == fs.size() && (es.empty() || es.size() == xs.size()), "fastreweight::", op,
              ": es and fs must both be empty (feature kernel) or both hold one tensor per layer (", xs.size(),
              "), got ", es.size(), " and ", fs.size());
  TORCH_CHECK(mus.empty() || mus.size() == xs.size(), "fastreweight::", op,
              ": mus must be empty (no centering) or hold one tensor per layer (", xs.size(), "), got ",
              mus.size());
  s.grad = !es.empty();
  s.center = !mus.empty();
  const at::Tensor& x0 = xs[0];
  TORCH_CHECK(is_float_dtype(x0.scalar_type()), "fastreweight::", op,
              ": xs[0] must have dtype float16, bfloat16, float32 or float64, got ", x0.scalar_type());
  s.in_dtype = x0.scalar_type();
  s.acc_dtype = s.in_dtype == at::kDouble ? at::kDouble : at::kFloat;
  const c10::Device dev = x0.device();
  auto same = [&](const at::Tensor& t, const std::string& name) {
    TORCH_CHECK(t.device() == dev, "fastreweight::", op, ": ", name, " is on ", t.device(), " but xs[0] is on ",
                dev, "; all inputs must be on one device");
  };
  auto mat = [&](const at::Tensor& t, const std::string& name, int64_t rows, const char* rows_what,
                 int64_t cols, const char* cols_what) {
    TORCH_CHECK(t.dim() == 2, "fastreweight::", op, ": ", name, " must be a 2-D tensor, got shape ", shape_str(t));
    TORCH_CHECK(t.scalar_type() == s.in_dtype, "fastreweight::", op, ": ", name, " has dtype ", t.scalar_type(),
                " but xs[0] has ", s.in_dtype, "; all feature tensors must share one dtype");
    same(t, name);
    if (rows >= 0)
      TORCH_CHECK(t.size(0) == rows, "fastreweight::", op, ": ", name, " must have ", rows, " rows (", rows_what,
                  "), got shape ", shape_str(t));
    if (cols >= 0)
      TORCH_CHECK(t.size(1) == cols, "fastreweight::", op, ": ", name, " must have ", cols, " columns (",
                  cols_what, "), got shape ", shape_str(t));
  };
  TORCH_CHECK(x0.dim() == 2, "fastreweight::", op, ": xs[0] must be a 2-D tensor, got shape ", shape_str(x0));
  TORCH_CHECK(zs[0].dim() == 2, "fastreweight::", op, ": zs[0] must be a 2-D tensor, got shape ",
              shape_str(zs[0]));
  s.B = x0.size(0);
  s.M = zs[0].size(0);
  for (size_t l = 0; l < xs.size(); ++l) {
    mat(xs[l], nm("xs", l), s.B, "the batch size of xs[0]", -1, "");
    const int64_t d = xs[l].size(1);
    mat(zs[l], nm("zs", l), s.M, "the clean-subset size of zs[0]", d, "the feature size of xs[l]");
    if (s.center) {
      const at::Tensor& mu = mus[l];
      TORCH_CHECK(mu.dim() == 1 && mu.size(0) == d, "fastreweight::", op, ": ", nm("mus", l),
                  " must be a 1-D tensor of length ", d, " (the feature size of xs[l]), got shape ", shape_str(mu));
      TORCH_CHECK(mu.scalar_type() == s.acc_dtype, "fastreweight::", op, ": ", nm("mus", l),
                  " must have the accumulation dtype ", s.acc_dtype, ", got ", mu.scalar_type());
      same(mu, nm("mus", l));
    }
    if (s.grad) {
      mat(es[l], nm("es", l), s.B, "the batch size of xs[0]", -1, "");
      mat(fs[l], nm("fs", l), s.M, "the clean-subset size of zs[0]", es[l].size(1), "the feature size of es[l]");
    }
  }
  TORCH_CHECK(clean_y.dim() == 1 && clean_y.size(0) == s.M, "fastreweight::", op,
              ": clean_y must be a 1-D tensor of length ", s.M, " (one label per clean row), got shape ",
              shape_str(clean_y));
  TORCH_CHECK(clean_y.scalar_type() == at::kLong, "fastreweight::", op, ": clean_y must have dtype int64, got ",
              clean_y.scalar_type());
  same(clean_y, "clean_y");
  TORCH_CHECK(class_weight.dim() == 1 && class_weight.size(0) >= 1, "fastreweight::", op,
              ": class_weight must be a 1-D tensor with one entry per class (at least one), got shape ",
              shape_str(class_weight));
  TORCH_CHECK(class_weight.scalar_type() == s.acc_dtype, "fastreweight::", op,
              ": class_weight must have the accumulation dtype ", s.acc_dtype, ", got ", class_weight.scalar_type());
  same(class_weight, "class_weight");
  s.C = class_weight.size(0);
  return s;
}

inline Shift check_epilogue(const char* op, const Shape& s, const at::Tensor& y, c10::string_view shift,
                            double alpha) {
  TORCH_CHECK(y.dim() == 1 && y.size(0) == s.B, "fastreweight::", op, ": y must be a 1-D tensor of length ", s.B,
              " (one label per batch row), got shape ", shape_str(y));
  TORCH_CHECK(y.scalar_type() == at::kLong, "fastreweight::", op, ": y must have dtype int64, got ",
              y.scalar_type());
  Shift sh = Shift::None;
  if (shift == "second") sh = Shift::Second;
  else if (shift == "max") sh = Shift::Max;
  else if (shift == "mean") sh = Shift::Mean;
  else if (shift == "none") sh = Shift::None;
  else TORCH_CHECK(false, "fastreweight::", op, ": shift must be one of second, max, mean, none, got '",
                   std::string(shift.data(), shift.size()), "'");
  TORCH_CHECK(std::isfinite(alpha) && alpha >= 0, "fastreweight::", op, ": alpha must be a finite float >= 0, got ",
              alpha);
  return sh;
}

}  // namespace fbr
