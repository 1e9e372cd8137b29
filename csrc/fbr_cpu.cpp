// fastreweight: CPU implementation of the pairwise streamed strategy (SPEC §4) and the fused FBR
// epilogue (SPEC §3.4), registered as the CPU kernels of the torch.library ops fastreweight::*.
// This translation unit also defines the op schemas (TORCH_LIBRARY), so the CUDA extension, which
// only adds CUDA kernels, must be loaded after it.
//
// Algorithm (never allocates anything of size B x M):
//   * the clean rows with a label in [0, C) are counting-sorted by class once (O(M + C)); the others
//     take no part;
//   * work items are (row block of BM batch rows, column group of clean tiles); a column group is a
//     fixed function of the shapes (never of the thread count), so results are bit-identical from run
//     to run and for any number of threads;
//   * per work item the batch rows of every layer are centred (x - mu) and, for cosine, scaled by
//     1/||x - mu|| into a per-tile buffer once; then for each tile of BN sorted clean rows the clean
//     rows are centred/scaled into a packed panel buffer, K = sum_l <X~, Z~> (* <E, F>) is formed by
//     a register-blocked micro-kernel (MR x NR accumulators, vectorised by the compiler, cloned for
//     AVX-512 / AVX2+FMA / baseline x86-64 with runtime dispatch), and reduced into per-class sums by a
//     segmented sum over the sorted labels (cost BM*BN, not BM*BN*C);
//   * S_ic = (1/M_c) * sum of the class-c partial sums, in column-group order.
// float32 inputs accumulate in float32, float64 in float64; float16/bfloat16 inputs are converted
// once to float32 on entry (a B x d and M x d copy), then treated as float32.
#include "fbr_common.h"

#include <ATen/Parallel.h>
#include <ATen/ATen.h>
#include <torch/library.h>

#include <Python.h>

#include <algorithm>
#include <limits>
#include <vector>

namespace fbr_cpu {

constexpr int64_t MR = 6;    // micro-kernel rows
constexpr int64_t BM = 96;   // batch rows per work item (multiple of MR)
constexpr int64_t BN = 128;  // clean rows per tile (multiple of NR)

// 32-byte vectors through GCC/Clang vector extensions: the compiler lowers them to whatever the
// target (clone) has (AVX-512VL/AVX2 ymm, or two SSE xmm on baseline x86-64; NEON on ARM).
// The aligned(sizeof(T)) variants are for loads/stores of possibly unaligned memory.
typedef float vf __attribute__((vector_size(32)));
typedef double vd __attribute__((vector_size(32)));
typedef float vf_u __attribute__((vector_size(32), aligned(4)));
typedef double vd_u __attribute__((vector_size(32), aligned(8)));
template <typename T> struct VecOf;
template <> struct VecOf<float> { using V = vf; using U = vf_u; };
template <> struct VecOf<double> { using V = vd; using U = vd_u; };

template <typename T>
struct NR_of {
  static constexpr int64_t lanes = 32 / static_cast<int64_t>(sizeof(T));
  static constexpr int64_t value = 2 * lanes;  // two vectors: 16 floats / 8 doubles
};

// G[i][j] (row stride BN) = <X~_i, Z~_j> for i < rows_pad (multiple of MR) and the npanels*NR
// columns of the packed clean tile. Xp: rows_pad/MR blocks, each d x MR contiguous (feature-major);
// Zp: npanels panels, each d x NR contiguous. The inner loop broadcasts MR batch values and
// multiply-adds them into two vectors of NR/2 lanes: MR x 2 vector accumulators stay in registers
// (12 of the 16 ymm registers of AVX2).
template <typename T>
static inline __attribute__((always_inline)) void gram_tile_impl(const T* __restrict__ Xp, int64_t rows_pad,
                                                                 int64_t d, const T* __restrict__ Zp,
                                                                 int64_t npanels, T* __restrict__ G) {
  using V = typename VecOf<T>::V;
  using U = typename VecOf<T>::U;
  constexpr int64_t NR = NR_of<T>::value, LN = NR_of<T>::lanes;
  for (int64_t q = 0; q < npanels; ++q) {
    const T* panel = Zp + q * d * NR;
    for (int64_t i0 = 0; i0 < rows_pad; i0 += MR) {
      V a0 = {}, a1 = {}, a2 = {}, a3 = {}, a4 = {}, a5 = {};
      V b0 = {}, b1 = {}, b2 = {}, b3 = {}, b4 = {}, b5 = {};
      const T* xb = Xp + i0 * d;
      for (int64_t p = 0; p < d; ++p) {
        const V z0 = *reinterpret_cast<const U*>(panel + p * NR);
        const V z1 = *reinterpret_cast<const U*>(panel + p * NR + LN);
        const T* xp = xb + p * MR;
        T v;
        v = xp[0]; a0 += v * z0; b0 += v * z1;
        v = xp[1]; a1 += v * z0; b1 += v * z1;
        v = xp[2]; a2 += v * z0; b2 += v * z1;
        v = xp[3]; a3 += v * z0; b3 += v * z1;
        v = xp[4]; a4 += v * z0; b4 += v * z1;
        v = xp[5]; a5 += v * z0; b5 += v * z1;
      }
      T* g = G + i0 * BN + q * NR;
      *reinterpret_cast<U*>(g + 0 * BN) = a0; *reinterpret_cast<U*>(g + 0 * BN + LN) = b0;
      *reinterpret_cast<U*>(g + 1 * BN) = a1; *reinterpret_cast<U*>(g + 1 * BN + LN) = b1;
      *reinterpret_cast<U*>(g + 2 * BN) = a2; *reinterpret_cast<U*>(g + 2 * BN + LN) = b2;
      *reinterpret_cast<U*>(g + 3 * BN) = a3; *reinterpret_cast<U*>(g + 3 * BN + LN) = b3;
      *reinterpret_cast<U*>(g + 4 * BN) = a4; *reinterpret_cast<U*>(g + 4 * BN + LN) = b4;
      *reinterpret_cast<U*>(g + 5 * BN) = a5; *reinterpret_cast<U*>(g + 5 * BN + LN) = b5;
    }
  }
}

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(FBR_NO_CLONES)
#define FBR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FBR_CLONES
#endif

FBR_CLONES void gram_tile_f32(const float* Xp, int64_t rows_pad, int64_t d, const float* Zp, int64_t npanels,
                              float* G) {
  gram_tile_impl<float>(Xp, rows_pad, d, Zp, npanels, G);
}
FBR_CLONES void gram_tile_f64(const double* Xp, int64_t rows_pad, int64_t d, const double* Zp, int64_t npanels,
                              double* G) {
  gram_tile_impl<double>(Xp, rows_pad, d, Zp, npanels, G);
}
static inline void gram_tile(const float* Xp, int64_t rp, int64_t d, const float* Zp, int64_t np, float* G) {
  gram_tile_f32(Xp, rp, d, Zp, np, G);
}
static inline void gram_tile(const double* Xp, int64_t rp, int64_t d, const double* Zp, int64_t np, double* G) {
  gram_tile_f64(Xp, rp, d, Zp, np, G);
}

// dst (row-major, n x d) = (src row - mu) * (cosine ? 1/||src row - mu|| : 1); 0 scale for a zero row.
template <typename T>
static inline void center_row(const T* src, int64_t d, const T* mu, bool cosine, T* dst) {
  if (mu) {
    for (int64_t p = 0; p < d; ++p) dst[p] = src[p] - mu[p];
  } else {
    for (int64_t p = 0; p < d; ++p) dst[p] = src[p];
  }
  if (cosine) {
    T ss = T(0);
    for (int64_t p = 0; p < d; ++p) ss += dst[p] * dst[p];
    const T n = std::sqrt(ss);
    const T scale = n > T(0) ? T(1) / n : T(0);
    for (int64_t p = 0; p < d; ++p) dst[p] *= scale;
  }
}

// Batch rows [r0, r0 + nr) into dst: rows_pad/MR blocks of d x MR (feature-major), rows past nr zero.
template <typename T>
static void pack_rows(const T* src, int64_t r0, int64_t nr, int64_t rows_pad, int64_t d, const T* mu, bool cosine,
                      T* rowbuf, T* dst) {
  for (int64_t r = 0; r < rows_pad; ++r) {
    T* out = dst + (r / MR) * d * MR + (r % MR);
    if (r < nr) {
      center_row(src + (r0 + r) * d, d, mu, cosine, rowbuf);
      for (int64_t p = 0; p < d; ++p) out[p * MR] = rowbuf[p];
    } else {
      for (int64_t p = 0; p < d; ++p) out[p * MR] = T(0);
    }
  }
}

// Clean rows rows[0..nc) into npanels feature-major panels (d x NR each), columns past nc zero.
// Each panel's NR rows are centred into rowbuf (NR x d, in L1) first, then transposed with
// contiguous writes.
template <typename T>
static void pack_panels(const T* src, const int64_t* rows, int64_t nc, int64_t npanels, int64_t d, const T* mu,
                        bool cosine, T* rowbuf, T* dst) {
  constexpr int64_t NR = NR_of<T>::value;
  for (int64_t q = 0; q < npanels; ++q) {
    for (int64_t c = 0; c < NR; ++c) {
      const int64_t col = q * NR + c;
      if (col < nc) center_row(src + rows[col] * d, d, mu, cosine, rowbuf + c * d);
      else std::fill(rowbuf + c * d, rowbuf + (c + 1) * d, T(0));
    }
    T* panel = dst + q * d * NR;
    for (int64_t p = 0; p < d; ++p)
      for (int64_t c = 0; c < NR; ++c) panel[p * NR + c] = rowbuf[c * d + p];
  }
}

struct Sorted {
  std::vector<int64_t> rows;    // clean row indices with a valid label, sorted by label (stable)
  std::vector<int64_t> labels;  // their labels
};

static Sorted sort_by_class(const int64_t* u, int64_t M, int64_t C) {
  std::vector<int64_t> count(C + 1, 0);
  for (int64_t j = 0; j < M; ++j)
    if (u[j] >= 0 && u[j] < C) ++count[u[j] + 1];
  for (int64_t c = 0; c < C; ++c) count[c + 1] += count[c];
  Sorted s;
  s.rows.resize(count[C]);
  s.labels.resize(count[C]);
  for (int64_t j = 0; j < M; ++j) {
    const int64_t c = u[j];
    if (c >= 0 && c < C) {
      const int64_t pos = count[c]++;
      s.rows[pos] = j;
      s.labels[pos] = c;
    }
  }
  return s;
}

template <typename T>
struct Inputs {
  std::vector<const T*> x, z, e, f, mu;
  std::vector<int64_t> d, k;
};

// S (B x C, row-major, every element written) = class-weighted sums of the pair kernel.
template <typename T>
static void similarity(const fbr::Shape& s, const Inputs<T>& in, const int64_t* clean_y, const T* w, bool cosine,
                       T* S) {
  constexpr int64_t NR = NR_of<T>::value;
  const int64_t B = s.B, C = s.C, L = s.L;
  if (B == 0) return;
  const Sorted srt = sort_by_class(clean_y, s.M, C);
  const int64_t Mv = static_cast<int64_t>(srt.rows.size());
  const int64_t ntiles = (Mv + BN - 1) / BN;
  const int64_t nrb = (B + BM - 1) / BM;
  // column groups: a function of the shapes only (determinism), enough work items for a few threads
  int64_t groups = 1;
  if (nrb < 16 && ntiles > 1) groups = std::min<int64_t>(ntiles, (16 + nrb - 1) / nrb);
  const int64_t tpg = ntiles > 0 ? (ntiles + groups - 1) / groups : 0;
  if (tpg > 0) groups = (ntiles + tpg - 1) / tpg;
  std::vector<T> parts(static_cast<size_t>(groups) * B * C, T(0));

  int64_t dmax = 0, kmax = 0;
  for (int64_t l = 0; l < L; ++l) {
    dmax = std::max(dmax, in.d[l]);
    if (s.grad) kmax = std::max(kmax, in.k[l]);
  }
  const int64_t npan_max = BN / NR;

  if (ntiles > 0) {
    at::parallel_for(0, nrb * groups, 1, [&](int64_t begin, int64_t end) {
      std::vector<std::vector<T>> Xp(L), Ep(L);
      std::vector<T> Zp(npan_max * NR * dmax), Fp(npan_max * NR * std::max<int64_t>(kmax, 1));
      std::vector<T> rowbuf(NR * (std::max(dmax, kmax) + 1));
      std::vector<T> Kt(BM * BN), G1(BM * BN), G2(BM * BN);
      for (int64_t item = begin; item < end; ++item) {
        const int64_t rb = item / groups, g = item % groups;
        const int64_t r0 = rb * BM, nr = std::min(BM, B - r0), rows_pad = (nr + MR - 1) / MR * MR;
        for (int64_t l = 0; l < L; ++l) {
          Xp[l].resize(rows_pad * in.d[l]);
          pack_rows<T>(in.x[l], r0, nr, rows_pad, in.d[l], s.center ? in.mu[l] : nullptr, cosine, rowbuf.data(),
                       Xp[l].data());
          if (s.grad) {
            Ep[l].resize(rows_pad * in.k[l]);
            pack_rows<T>(in.e[l], r0, nr, rows_pad, in.k[l], nullptr, cosine, rowbuf.data(), Ep[l].data());
          }
        }
        T* U = parts.data() + g * B * C;
        const int64_t t_end = std::min(ntiles, (g + 1) * tpg);
        for (int64_t t = g * tpg; t < t_end; ++t) {
          const int64_t j0 = t * BN, nc = std::min(BN, Mv - j0), npan = (nc + NR - 1) / NR;
          const int64_t width = npan * NR;
          const int64_t* rows = srt.rows.data() + j0;
          for (int64_t l = 0; l < L; ++l) {
            pack_panels<T>(in.z[l], rows, nc, npan, in.d[l], s.center ? in.mu[l] : nullptr, cosine, rowbuf.data(),
                        Zp.data());
            T* dstK = (l == 0 && !s.grad) ? Kt.data() : G1.data();
            gram_tile(Xp[l].data(), rows_pad, in.d[l], Zp.data(), npan, dstK);
            if (s.grad) {
              pack_panels<T>(in.f[l], rows, nc, npan, in.k[l], nullptr, cosine, rowbuf.data(), Fp.data());
              gram_tile(Ep[l].data(), rows_pad, in.k[l], Fp.data(), npan, G2.data());
              for (int64_t i = 0; i < rows_pad; ++i) {
                T* kr = Kt.data() + i * BN;
                const T* a = G1.data() + i * BN;
                const T* b = G2.data() + i * BN;
                if (l == 0)
                  for (int64_t j = 0; j < width; ++j) kr[j] = a[j] * b[j];
                else
                  for (int64_t j = 0; j < width; ++j) kr[j] += a[j] * b[j];
              }
            } else if (l > 0) {
              for (int64_t i = 0; i < rows_pad; ++i) {
                T* kr = Kt.data() + i * BN;
                const T* a = G1.data() + i * BN;
                for (int64_t j = 0; j < width; ++j) kr[j] += a[j];
              }
            }
          }
          // segmented sum over the tile's sorted labels
          const int64_t* lab = srt.labels.data() + j0;
          for (int64_t r = 0; r < nr; ++r) {
            const T* kr = Kt.data() + r * BN;
            T* ur = U + (r0 + r) * C;
            int64_t j = 0;
            while (j < nc) {
              const int64_t c = lab[j];
              T sum = T(0);
              for (; j < nc && lab[j] == c; ++j) sum += kr[j];
              ur[c] += sum;
            }
          }
        }
      }
    });
  }
  at::parallel_for(0, B, 64, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      for (int64_t c = 0; c < C; ++c) {
        T acc = T(0);
        for (int64_t g = 0; g < groups; ++g) acc += parts[(g * B + i) * C + c];
        S[i * C + c] = w[c] * acc;
      }
  });
}

struct Prepared {
  std::vector<at::Tensor> keep;  // converted / contiguous copies, kept alive
};

template <typename T>
static Inputs<T> prepare(const fbr::Shape& s, at::TensorList xs, at::TensorList zs, at::TensorList mus,
                         at::TensorList es, at::TensorList fs, Prepared& keep) {
  Inputs<T> in;
  auto conv = [&](const at::Tensor& t) -> const T* {
    at::Tensor c = t.to(s.acc_dtype).contiguous();  // no copy for contiguous float32/float64 inputs
    keep.keep.push_back(c);
    return c.data_ptr<T>();
  };
  for (int64_t l = 0; l < s.L; ++l) {
    in.x.push_back(conv(xs[l]));
    in.z.push_back(conv(zs[l]));
    in.d.push_back(xs[l].size(1));
    in.mu.push_back(s.center ? conv(mus[l]) : nullptr);
    if (s.grad) {
      in.e.push_back(conv(es[l]));
      in.f.push_back(conv(fs[l]));
      in.k.push_back(es[l].size(1));
    }
  }
  return in;
}

static void check_cpu(const char* op, const at::Tensor& x0) {
  TORCH_CHECK(x0.device().is_cpu(), "fastreweight::", op, ": the CPU kernel got tensors on ", x0.device());
}

static at::Tensor compute_similarity(const char* op, const fbr::Shape& s, at::TensorList xs, at::TensorList zs,
                                     at::TensorList mus, at::TensorList es, at::TensorList fs,
                                     const at::Tensor& clean_y, const at::Tensor& class_weight, bool cosine) {
  at::Tensor S = at::empty({s.B, s.C}, xs[0].options().dtype(s.acc_dtype));
  at::Tensor u = clean_y.contiguous();
  at::Tensor w = class_weight.contiguous();
  Prepared keep;
  if (s.acc_dtype == at::kDouble) {
    auto in = prepare<double>(s, xs, zs, mus, es, fs, keep);
    similarity<double>(s, in, u.data_ptr<int64_t>(), w.data_ptr<double>(), cosine, S.data_ptr<double>());
  } else {
    auto in = prepare<float>(s, xs, zs, mus, es, fs, keep);
    similarity<float>(s, in, u.data_ptr<int64_t>(), w.data_ptr<float>(), cosine, S.data_ptr<float>());
  }
  return S;
}

at::Tensor class_similarity_cpu(at::TensorList xs, at::TensorList zs, at::TensorList mus, at::TensorList es,
                                at::TensorList fs, const at::Tensor& clean_y, const at::Tensor& class_weight,
                                bool cosine) {
  const char* op = "class_similarity";
  const fbr::Shape s = fbr::check_inputs(op, xs, zs, mus, es, fs, clean_y, class_weight);
  check_cpu(op, xs[0]);
  return compute_similarity(op, s, xs, zs, mus, es, fs, clean_y, class_weight, cosine);
}

// d_i = fbr_row(S_i) for every row (SPEC §3.4), in S's dtype.
static at::Tensor epilogue(const at::Tensor& S, const at::Tensor& y, const at::Tensor& class_weight, fbr::Shift sh,
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

at::Tensor fbr_scores_cpu(at::TensorList xs, at::TensorList zs, at::TensorList mus, at::TensorList es,
                          at::TensorList fs, const at::Tensor& clean_y, const at::Tensor& class_weight, bool cosine,
                          const at::Tensor& y, c10::string_view shift, double alpha) {
  const char* op = "fbr_scores";
  const fbr::Shape s = fbr::check_inputs(op, xs, zs, mus, es, fs, clean_y, class_weight);
  const fbr::Shift sh = fbr::check_epilogue(op, s, y, shift, alpha);
  TORCH_CHECK(y.device() == xs[0].device(), "fastreweight::", op, ": y is on ", y.device(), " but xs[0] is on ",
              xs[0].device(), "; all inputs must be on one device");
  check_cpu(op, xs[0]);
  at::Tensor S = compute_similarity(op, s, xs, zs, mus, es, fs, clean_y, class_weight, cosine);
  return epilogue(S, y, class_weight, sh, alpha);
}

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

struct ProtoShape {
  int64_t B = 0, C = 0, L = 0;
  bool grad = false, center = false;
  at::ScalarType acc = at::kFloat;
};

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
                  " must be a 1-D tensor of length ", d, " (the feature size of xs[l]), got shape ", fbr::shape_str(mu));
      TORCH_CHECK(mu.scalar_type() == p.acc, "fastreweight::", op, ": ", fbr::nm("mus", l),
                  " must have the accumulation dtype ", p.acc, ", got ", mu.scalar_type());
      same(mu, fbr::nm("mus", l));
    }
  }
  check_cpu(op, x0);
  return p;
}

// Small feature-kernel calls (B*C*sum(d) <= kDirectWork) skip the GEMM machinery: four batch rows at
// a time are centred (and for cosine normalised) into a buffer, their C dot products with the
// prototypes are taken in register tiles of 4 rows x 4 classes and, for fbr_scores, the epilogue is
// applied to each finished row.  A training step of a
// small model scores 64 rows against 10 prototypes of 256 features: ~160k multiply-adds, a few
// microseconds, where the ATen path's four tensor ops and their allocations cost several times that.
// Rows are independent and summed in a fixed order: the result does not depend on the thread count.
constexpr int64_t kDirectWork = int64_t(1) << 22;

template <typename T>
static inline T hsum(typename VecOf<T>::V v) {
  T acc = T(0);
  for (int64_t j = 0; j < NR_of<T>::lanes; ++j) acc += v[j];
  return acc;
}

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

static at::Tensor prototype_similarity(const ProtoShape& p, at::TensorList xs, at::TensorList mus,
                                       at::TensorList es, at::TensorList protos, bool cosine) {
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

at::Tensor class_similarity_prototype_cpu(at::TensorList xs, at::TensorList mus, at::TensorList es,
                                          at::TensorList protos, bool cosine) {
  const char* op = "class_similarity_prototype";
  const ProtoShape p = check_proto_inputs(op, xs, mus, es, protos);
  return prototype_similarity(p, xs, mus, es, protos, cosine);
}

static at::Tensor scores_prototype(const char* op, at::TensorList xs, at::TensorList mus, at::TensorList es,
                                   at::TensorList protos, const at::Tensor& class_weight, bool cosine,
                                   const at::Tensor& y, c10::string_view shift, double alpha) {
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
  return epilogue(S, y, class_weight, sh, alpha);
}

at::Tensor fbr_scores_prototype_cpu(at::TensorList xs, at::TensorList mus, at::TensorList es, at::TensorList protos,
                                    const at::Tensor& class_weight, bool cosine, const at::Tensor& y,
                                    c10::string_view shift, double alpha) {
  return scores_prototype("fbr_scores_prototype", xs, mus, es, protos, class_weight, cosine, y, shift, alpha);
}

// ---------------------------------------------------------------------------------------------
// Reweighter update (SPEC §3.6) in one pass, in place:
//   r^ = r / (mean|r| + eps)  (normalize_update="mean_abs"; "none": r^ = r),
//   new_i = clip(w[idx_i] + lr * r^_i, 0, 1);  w[idx_i] <- new_i  (a repeated index: the last wins).
// Every index is bounds-checked here (a bad index raises; it never writes out of bounds).
// ---------------------------------------------------------------------------------------------
template <typename T>
static void reweighter_update(const char* op, T* w, int64_t N, const int64_t* idx, const T* r, int64_t B,
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

static at::Tensor apply_update(const char* op, at::Tensor& weights, const at::Tensor& idx, const at::Tensor& scores, double lr,
                               bool mean_abs, double eps) {
  const int64_t B = idx.size(0), N = weights.size(0);
  at::Tensor out = at::empty({B}, weights.options());
  at::Tensor ic = idx.contiguous();
  at::Tensor rc = scores.to(weights.scalar_type()).contiguous();
  if (weights.scalar_type() == at::kDouble)
    reweighter_update<double>(op, weights.data_ptr<double>(), N, ic.data_ptr<int64_t>(), rc.data_ptr<double>(), B, lr,
                              mean_abs, eps, out.data_ptr<double>());
  else
    reweighter_update<float>(op, weights.data_ptr<float>(), N, ic.data_ptr<int64_t>(), rc.data_ptr<float>(), B, lr,
                             mean_abs, eps, out.data_ptr<float>());
  return out;
}

at::Tensor reweighter_step_cpu(at::Tensor weights, const at::Tensor& idx, const at::Tensor& scores, double lr,
                               c10::string_view normalize_update, double eps) {
  const char* op = "reweighter_step";
  TORCH_CHECK(scores.dim() == 1 && scores.size(0) == idx.size(0) && fbr::is_float_dtype(scores.scalar_type()),
              "fastreweight::", op, ": scores must be a 1-D float tensor of length ", idx.size(0),
              " (one score per index), got ", scores.scalar_type(), " of shape ", fbr::shape_str(scores));
  const bool mean_abs = check_reweighter(op, weights, idx, scores.size(0), lr, normalize_update, eps);
  TORCH_CHECK(scores.device().is_cpu(), "fastreweight::", op, ": the CPU kernel needs scores on the CPU, got ",
              scores.device());
  return apply_update(op, weights, idx, scores, lr, mean_abs, eps);
}

// coef_i = w_i / max(sum_j w_j, loss_eps): the weights of the "weight_sum" loss reduction
// (weights.weighted_loss), so that the training step's loss is one dot product with the losses.
// The sum runs in the weights' dtype, left to right.
template <typename T>
static void loss_coefficients(const T* w, int64_t B, double loss_eps, T* coef) {
  T sum = T(0);
  for (int64_t i = 0; i < B; ++i) sum += w[i];
  const T denom = std::max(sum, static_cast<T>(loss_eps));
  for (int64_t i = 0; i < B; ++i) coef[i] = w[i] / denom;
}

// Scores, the Reweighter update and the loss coefficients in one op (prototype strategy): the
// training step of the stateful recipe, one dispatch instead of two plus three for the loss's
// normalisation.  Returns (scores, the batch's new weights, their loss coefficients).
std::tuple<at::Tensor, at::Tensor, at::Tensor> fbr_reweight_prototype_cpu(
    at::TensorList xs, at::TensorList mus, at::TensorList es, at::TensorList protos, const at::Tensor& class_weight,
    bool cosine, const at::Tensor& y, c10::string_view shift, double alpha, at::Tensor weights, const at::Tensor& idx,
    double lr, c10::string_view normalize_update, double eps, double loss_eps) {
  const char* op = "fbr_reweight_prototype";
  const int64_t B = (xs.empty() || xs[0].dim() == 0) ? 0 : xs[0].size(0);
  const bool mean_abs = check_reweighter(op, weights, idx, B, lr, normalize_update, eps);  // before any work
  TORCH_CHECK(std::isfinite(loss_eps) && loss_eps > 0, "fastreweight::", op,
              ": loss_eps must be a finite float > 0, got ", loss_eps);
  at::Tensor d = scores_prototype(op, xs, mus, es, protos, class_weight, cosine, y, shift, alpha);
  at::Tensor w = apply_update(op, weights, idx, d, lr, mean_abs, eps);
  at::Tensor coef = at::empty({B}, w.options());
  if (w.scalar_type() == at::kDouble)
    loss_coefficients<double>(w.data_ptr<double>(), B, loss_eps, coef.data_ptr<double>());
  else
    loss_coefficients<float>(w.data_ptr<float>(), B, loss_eps, coef.data_ptr<float>());
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

at::Tensor threshold_weights_cpu(const at::Tensor& scores) {
  const char* op = "threshold_weights";
  TORCH_CHECK(scores.dim() == 1 && (scores.scalar_type() == at::kFloat || scores.scalar_type() == at::kDouble),
              "fastreweight::", op, ": scores must be a 1-D float32 or float64 tensor, got ", scores.scalar_type(),
              " of shape ", fbr::shape_str(scores));
  check_cpu(op, scores);
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

TORCH_LIBRARY(fastreweight, m) {
  m.def(
      "class_similarity(Tensor[] xs, Tensor[] zs, Tensor[] mus, Tensor[] es, Tensor[] fs, Tensor clean_y, "
      "Tensor class_weight, bool cosine) -> Tensor");
  m.def(
      "fbr_scores(Tensor[] xs, Tensor[] zs, Tensor[] mus, Tensor[] es, Tensor[] fs, Tensor clean_y, "
      "Tensor class_weight, bool cosine, Tensor y, str shift, float alpha) -> Tensor");
  m.def(
      "class_similarity_prototype(Tensor[] xs, Tensor[] mus, Tensor[] es, Tensor[] protos, bool cosine) -> Tensor");
  m.def(
      "fbr_scores_prototype(Tensor[] xs, Tensor[] mus, Tensor[] es, Tensor[] protos, Tensor class_weight, "
      "bool cosine, Tensor y, str shift, float alpha) -> Tensor");
  m.def(
      "reweighter_step(Tensor(a!) weights, Tensor idx, Tensor scores, float lr, str normalize_update, float eps) "
      "-> Tensor");
  m.def(
      "fbr_reweight_prototype(Tensor[] xs, Tensor[] mus, Tensor[] es, Tensor[] protos, Tensor class_weight, "
      "bool cosine, Tensor y, str shift, float alpha, Tensor(a!) weights, Tensor idx, float lr, "
      "str normalize_update, float eps, float loss_eps) -> (Tensor, Tensor, Tensor)");
  m.def("threshold_weights(Tensor scores) -> Tensor");
}

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
