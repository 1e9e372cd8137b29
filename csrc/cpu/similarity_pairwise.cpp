// fastreweight: the pairwise streamed strategy of SPEC §4 on the CPU (the class similarity S of
// fastreweight::class_similarity / fbr_scores; the ops' entry points and input checks are in
// register.cpp).
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
#include "cpu/kernels.h"
#include "cpu/microkernels.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace fbr_cpu {

constexpr int64_t MR = 6;    // micro-kernel rows
constexpr int64_t BM = 96;   // batch rows per work item (multiple of MR)
constexpr int64_t BN = 128;  // clean rows per tile (multiple of NR)

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

at::Tensor pairwise_similarity(const fbr::Shape& s, at::TensorList xs, at::TensorList zs, at::TensorList mus,
                               at::TensorList es, at::TensorList fs, const at::Tensor& clean_y,
                               const at::Tensor& class_weight, bool cosine) {
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

}  // namespace fbr_cpu
