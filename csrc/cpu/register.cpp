// fastreweight: the CPU entry points of the ops fastreweight::* (schemas and fake kernels:
// fastreweight/csrc_backend/ops.py, defined before this library is loaded).  Each entry point checks
// its inputs — every message starts with "fastreweight::<op>: <argument>" (tests match them) — and
// calls one kernel of similarity_pairwise.cpp, similarity_prototype.cpp or epilogue.cpp.
#include "checks.h"
#include "cpu/kernels.h"

#include <ATen/ATen.h>
#include <torch/library.h>

#include <Python.h>

#include <cmath>
#include <string>
#include <utility>

namespace fbr_cpu {

static void check_cpu(const char* op, const at::Tensor& x0) {
  TORCH_CHECK(x0.device().is_cpu(), "fastreweight::", op, ": the CPU kernel got tensors on ", x0.device());
}

static at::Tensor class_similarity_cpu(at::TensorList xs, at::TensorList zs, at::TensorList mus, at::TensorList es,
                                       at::TensorList fs, const at::Tensor& clean_y, const at::Tensor& class_weight,
                                       bool cosine) {
  const char* op = "class_similarity";
  const fbr::Shape s = fbr::check_inputs(op, xs, zs, mus, es, fs, clean_y, class_weight);
  check_cpu(op, xs[0]);
  return pairwise_similarity(s, xs, zs, mus, es, fs, clean_y, class_weight, cosine);
}

static at::Tensor fbr_scores_cpu(at::TensorList xs, at::TensorList zs, at::TensorList mus, at::TensorList es,
                                 at::TensorList fs, const at::Tensor& clean_y, const at::Tensor& class_weight,
                                 bool cosine, const at::Tensor& y, c10::string_view shift, double alpha) {
  const char* op = "fbr_scores";
  const fbr::Shape s = fbr::check_inputs(op, xs, zs, mus, es, fs, clean_y, class_weight);
  const fbr::Shift sh = fbr::check_epilogue(op, s, y, shift, alpha);
  TORCH_CHECK(y.device() == xs[0].device(), "fastreweight::", op, ": y is on ", y.device(), " but xs[0] is on ",
              xs[0].device(), "; all inputs must be on one device");
  check_cpu(op, xs[0]);
  return fbr_epilogue(pairwise_similarity(s, xs, zs, mus, es, fs, clean_y, class_weight, cosine), y, class_weight, sh,
                      alpha);
}

static ProtoShape check_proto_inputs(const char* op, at::TensorList xs, at::TensorList mus, at::TensorList es,
                                     at::TensorList protos) {
  ProtoShape p;
  TORCH_CHECK(!xs.empty(), "fastreweight::", op, ": xs must hold at least one layer, got an empty list");
  p.L = static_cast<int64_t>(xs.size());
  TORCH_CHECK(protos.size() == xs.size(), "fastreweight::", op, ": protos must hold one tensor per layer like xs (",
              xs.size(), "), got ", protos.size());
  TORCH_CHECK(mus.empty() || mus.size() == xs.size(), "fastreweight::", op,
              ": mus must be empty (no centering) or hold one tensor per layer (", xs.size(), "), got ", mus.size());
  TORCH_CHECK(es.empty() || es.size() == xs.size(), "fastreweight::", op,
              ": es must be empty (feature kernel) or hold one tensor per layer (", xs.size(), "), got ", es.size());
  p.grad = !es.empty();
  p.center = !mus.empty();
  const at::Tensor& x0 = xs[0];
  TORCH_CHECK(fbr::is_float_dtype(x0.scalar_type()), "fastreweight::", op,
              ": xs[0] must have dtype float16, bfloat16, float32 or float64, got ", x0.scalar_type());
  TORCH_CHECK(x0.dim() == 2, "fastreweight::", op, ": xs[0] must be a 2-D tensor, got shape ", fbr::shape_str(x0));
  p.acc = x0.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  p.B = x0.size(0);
  const at::Tensor& p0 = protos[0];
  TORCH_CHECK(p0.dim() == (p.grad ? 3 : 2) && p0.size(0) >= 1, "fastreweight::", op, ": protos[0] must be a ",
              p.grad ? "3-D tensor [C, k, d] (gradient kernel)" : "2-D tensor [C, d] (feature kernel)",
              " with at least one class, got shape ", fbr::shape_str(p0));
  p.C = p0.size(0);
  const c10::Device dev = x0.device();
  auto same = [&](const at::Tensor& t, const std::string& name) {
    TORCH_CHECK(t.device() == dev, "fastreweight::", op, ": ", name, " is on ", t.device(), " but xs[0] is on ",
                dev, "; all inputs must be on one device");
  };
  // a batch-side factor: B rows, the dtype and device of xs[0]
  auto batch_factor = [&](const at::Tensor& t, const std::string& name) {
    TORCH_CHECK(t.dim() == 2 && t.size(0) == p.B, "fastreweight::", op, ": ", name, " must be a 2-D tensor with ",
                p.B, " rows (the batch size of xs[0]), got shape ", fbr::shape_str(t));
    TORCH_CHECK(t.scalar_type() == x0.scalar_type(), "fastreweight::", op, ": ", name, " has dtype ",
                t.scalar_type(), " but xs[0] has ", x0.scalar_type(), "; all feature tensors must share one dtype");
    same(t, name);
  };
  for (size_t l = 0; l < xs.size(); ++l) {
    batch_factor(xs[l], fbr::nm("xs", l));
    const int64_t d = xs[l].size(1);
    const at::Tensor& P = protos[l];
    if (p.grad) {
      batch_factor(es[l], fbr::nm("es", l));
      const int64_t k = es[l].size(1);
      TORCH_CHECK(P.dim() == 3 && P.size(0) == p.C && P.size(1) == k && P.size(2) == d, "fastreweight::", op, ": ",
                  fbr::nm("protos", l), " must have shape [", p.C, ", ", k, ", ", d,
                  "] (classes, feature size of es[l], feature size of xs[l]), got shape ", fbr::shape_str(P));
    } else {
      TORCH_CHECK(P.dim() == 2 && P.size(0) == p.C && P.size(1) == d, "fastreweight::", op, ": ",
                  fbr::nm("protos", l), " must have shape [", p.C, ", ", d,
                  "] (classes, feature size of xs[l]), got shape ", fbr::shape_str(P));
    }
    TORCH_CHECK(P.scalar_type() == p.acc, "fastreweight::", op, ": ", fbr::nm("protos", l),
                " must have the accumulation dtype ", p.acc, ", got ", P.scalar_type());
    same(P, fbr::nm("protos", l));
    if (p.center) {
      const at::Tensor& mu = mus[l];
      TORCH_CHECK(mu.dim() == 1 && mu.size(0) == d, "fastreweight::", op, ": ", fbr::nm("mus", l),
                  " must be a 1-D tensor of length ", d, " (the feature size of xs[l]), got shape ",
                  fbr::shape_str(mu));
      TORCH_CHECK(mu.scalar_type() == p.acc, "fastreweight::", op, ": ", fbr::nm("mus", l),
                  " must have the accumulation dtype ", p.acc, ", got ", mu.scalar_type());
      same(mu, fbr::nm("mus", l));
    }
  }
  check_cpu(op, x0);
  return p;
}

static at::Tensor class_similarity_prototype_cpu(at::TensorList xs, at::TensorList mus, at::TensorList es,
                                                 at::TensorList protos, bool cosine) {
  const char* op = "class_similarity_prototype";
  const ProtoShape p = check_proto_inputs(op, xs, mus, es, protos);
  return prototype_similarity(p, xs, mus, es, protos, cosine);
}

// The prototype inputs of a scoring op and its epilogue arguments (class_weight, y, shift, alpha).
static std::pair<ProtoShape, fbr::Shift> check_proto_scores(const char* op, at::TensorList xs, at::TensorList mus,
                                                           at::TensorList es, at::TensorList protos,
                                                           const at::Tensor& class_weight, const at::Tensor& y,
                                                           c10::string_view shift, double alpha) {
  const ProtoShape p = check_proto_inputs(op, xs, mus, es, protos);
  TORCH_CHECK(class_weight.dim() == 1 && class_weight.size(0) == p.C, "fastreweight::", op,
              ": class_weight must be a 1-D tensor of length ", p.C, " (one entry per class of protos), got shape ",
              fbr::shape_str(class_weight));
  TORCH_CHECK(class_weight.scalar_type() == p.acc, "fastreweight::", op,
              ": class_weight must have the accumulation dtype ", p.acc, ", got ", class_weight.scalar_type());
  fbr::Shape s;
  s.B = p.B;
  const fbr::Shift sh = fbr::check_epilogue(op, s, y, shift, alpha);
  TORCH_CHECK(y.device() == xs[0].device() && class_weight.device() == xs[0].device(), "fastreweight::", op,
              ": y and class_weight must be on the device of xs[0] (", xs[0].device(), "), got ", y.device(), " and ",
              class_weight.device());
  return {p, sh};
}

static at::Tensor fbr_scores_prototype_cpu(at::TensorList xs, at::TensorList mus, at::TensorList es,
                                           at::TensorList protos, const at::Tensor& class_weight, bool cosine,
                                           const at::Tensor& y, c10::string_view shift, double alpha) {
  const auto [p, sh] = check_proto_scores("fbr_scores_prototype", xs, mus, es, protos, class_weight, y, shift, alpha);
  return prototype_scores(p, xs, mus, es, protos, class_weight, cosine, y, sh, alpha);
}

// Checks the Reweighter state and update arguments; returns whether the update is normalised.
static bool check_reweighter(const char* op, const at::Tensor& weights, const at::Tensor& idx, int64_t B, double lr,
                             c10::string_view normalize_update, double eps) {
  TORCH_CHECK(weights.dim() == 1 && (weights.scalar_type() == at::kFloat || weights.scalar_type() == at::kDouble),
              "fastreweight::", op, ": weights must be a 1-D float32 or float64 tensor, got ", weights.scalar_type(),
              " of shape ", fbr::shape_str(weights));
  TORCH_CHECK(weights.is_contiguous(), "fastreweight::", op, ": weights must be contiguous (it is updated in place)");
  TORCH_CHECK(idx.dim() == 1 && idx.scalar_type() == at::kLong, "fastreweight::", op,
              ": idx must be a 1-D int64 tensor, got ", idx.scalar_type(), " of shape ", fbr::shape_str(idx));
  TORCH_CHECK(idx.size(0) == B, "fastreweight::", op, ": idx must have length ", B, " (one index per batch row), got ",
              idx.size(0));
  TORCH_CHECK(weights.device().is_cpu() && idx.device().is_cpu(), "fastreweight::", op,
              ": the CPU kernel needs weights and idx on the CPU, got ", weights.device(), " and ", idx.device());
  TORCH_CHECK(std::isfinite(lr) && lr >= 0, "fastreweight::", op, ": lr must be a finite float >= 0, got ", lr);
  TORCH_CHECK(std::isfinite(eps) && eps > 0, "fastreweight::", op, ": eps must be a finite float > 0, got ", eps);
  const bool mean_abs = normalize_update == "mean_abs";
  TORCH_CHECK(mean_abs || normalize_update == "none", "fastreweight::", op,
              ": normalize_update must be one of mean_abs, none, got '",
              std::string(normalize_update.data(), normalize_update.size()), "'");
  return mean_abs;
}

static at::Tensor reweighter_step_cpu(at::Tensor weights, const at::Tensor& idx, const at::Tensor& scores, double lr,
                                      c10::string_view normalize_update, double eps) {
  const char* op = "reweighter_step";
  TORCH_CHECK(scores.dim() == 1 && scores.size(0) == idx.size(0) && fbr::is_float_dtype(scores.scalar_type()),
              "fastreweight::", op, ": scores must be a 1-D float tensor of length ", idx.size(0),
              " (one score per index), got ", scores.scalar_type(), " of shape ", fbr::shape_str(scores));
  const bool mean_abs = check_reweighter(op, weights, idx, scores.size(0), lr, normalize_update, eps);
  TORCH_CHECK(scores.device().is_cpu(), "fastreweight::", op, ": the CPU kernel needs scores on the CPU, got ",
              scores.device());
  return reweighter_update(op, weights, idx, scores, lr, mean_abs, eps);
}

static std::tuple<at::Tensor, at::Tensor, at::Tensor> fbr_reweight_prototype_cpu(
    at::TensorList xs, at::TensorList mus, at::TensorList es, at::TensorList protos, const at::Tensor& class_weight,
    bool cosine, const at::Tensor& y, c10::string_view shift, double alpha, at::Tensor weights, const at::Tensor& idx,
    double lr, c10::string_view normalize_update, double eps, double loss_eps) {
  const char* op = "fbr_reweight_prototype";
  const int64_t B = (xs.empty() || xs[0].dim() == 0) ? 0 : xs[0].size(0);
  const bool mean_abs = check_reweighter(op, weights, idx, B, lr, normalize_update, eps);  // before any work
  TORCH_CHECK(std::isfinite(loss_eps) && loss_eps > 0, "fastreweight::", op,
              ": loss_eps must be a finite float > 0, got ", loss_eps);
  const auto [p, sh] = check_proto_scores(op, xs, mus, es, protos, class_weight, y, shift, alpha);
  return reweight_prototype(op, p, xs, mus, es, protos, class_weight, cosine, y, sh, alpha, weights, idx, lr, mean_abs,
                            eps, loss_eps);
}

static at::Tensor threshold_weights_cpu(const at::Tensor& scores) {
  const char* op = "threshold_weights";
  TORCH_CHECK(scores.dim() == 1 && (scores.scalar_type() == at::kFloat || scores.scalar_type() == at::kDouble),
              "fastreweight::", op, ": scores must be a 1-D float32 or float64 tensor, got ", scores.scalar_type(),
              " of shape ", fbr::shape_str(scores));
  check_cpu(op, scores);
  return threshold_weights(scores);
}

}  // namespace fbr_cpu

TORCH_LIBRARY_IMPL(fastreweight, CPU, m) {
  m.impl("class_similarity", &fbr_cpu::class_similarity_cpu);
  m.impl("fbr_scores", &fbr_cpu::fbr_scores_cpu);
  m.impl("class_similarity_prototype", &fbr_cpu::class_similarity_prototype_cpu);
  m.impl("fbr_scores_prototype", &fbr_cpu::fbr_scores_prototype_cpu);
  m.impl("reweighter_step", &fbr_cpu::reweighter_step_cpu);
  m.impl("threshold_weights", &fbr_cpu::threshold_weights_cpu);
  m.impl("fbr_reweight_prototype", &fbr_cpu::fbr_reweight_prototype_cpu);
}

// A module init function, so that a setup.py build can be imported as fastreweight._C_cpu
// (importing it runs the registrations above). JIT builds load the library with
// torch.ops.load_library instead and never call it.
#ifdef TORCH_EXTENSION_NAME
#define FBR_STR2(x) #x
#define FBR_STR(x) FBR_STR2(x)
#define FBR_CAT2(a, b) a##b
#define FBR_CAT(a, b) FBR_CAT2(a, b)

static struct PyModuleDef fbr_cpu_module = {PyModuleDef_HEAD_INIT, FBR_STR(TORCH_EXTENSION_NAME),
                                            "fastreweight CPU kernels (registered as torch.ops.fastreweight.*)",
                                            -1, nullptr, nullptr, nullptr, nullptr, nullptr};
PyMODINIT_FUNC FBR_CAT(PyInit_, TORCH_EXTENSION_NAME)(void) { return PyModule_Create(&fbr_cpu_module); }
#endif
