// fastreweight: CUDA kernels of the pairwise streamed strategy (SPEC §4) and the fused FBR epilogue
// (SPEC §3.4) of the ops fastreweight::class_similarity / fbr_scores (entry points and input checks:
// cuda/register.cpp; schemas: fastreweight/csrc_backend/ops.py).
//
// Per call:
//   1. the clean rows are stably sorted by label on the device (invalid labels, outside [0, C), go
//      last and take no part), so a 64-column tile covers few classes and aggregation is a segmented
//      sum;
//   2. row statistics, O((B + M) * (d + k)), one warp per row: <row, mu> (tensor-core path only) and,
//      for cosine, 1 / ||row - mu|| (0 for a zero row);
//   3. the main kernel: block (row block of 64 batch rows, column group of consecutive 64-row clean
//      tiles); per tile and layer a 64x64 Gram tile <X_i, Z_j> (and <E_i, F_j>) is formed in registers,
//      centred / scaled / multiplied / summed over layers into K (registers), staged in shared memory
//      and reduced per row into per-class sums by one thread per row (fixed order: deterministic, no
//      atomics), written to the column group's partial buffer;
//   4. S = class_weight * sum of the partials in group order (fixed order); fbr_scores runs the
//      epilogue of fbr_row.h, one thread per row.
// Gram tiles: float32 / float64 through a shared-memory tiled CUDA-core path that centres while loading
// (x - mu in the accumulation dtype, as the reference); float16 / bfloat16 on tensor cores through WMMA
// (16x16x16, float32 accumulation) on the raw inputs, centred afterwards with
// <x - mu, z - mu> = <x, z> - <x, mu> - <mu, z> + <mu, mu> (SPEC §3.1), so no centred copy is rounded to
// 16 bits. All indices into inputs are int64.
//
// Compile check without a CUDA build of torch: csrc/compile_cuda_check.sh.
#include "cuda/kernels.h"
#include "fbr_row.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <algorithm>
#include <limits>
#include <vector>

namespace fbr_cuda {

constexpr int kThreads = 256;
constexpr int kTile = 64;     // 64 batch rows x 64 clean rows per tile
constexpr int kBK = 16;       // CUDA-core path: features per shared-memory step
constexpr int kBKH = 32;      // tensor-core path: features per shared-memory step
constexpr int kLdF = kTile + 4;
constexpr int kLdH = kBKH + 8;  // multiple of 8 halves (WMMA ldm), keeps 32-byte fragment alignment
constexpr int kLdK = kTile + 1;

template <typename T, typename A>
struct LayerArgs {
  const T* x = nullptr;
  const T* z = nullptr;
  const T* e = nullptr;
  const T* f = nullptr;
  const A* mu = nullptr;
  const A* rx = nullptr;  // <x_i, mu>       (tensor-core path with centering)
  const A* rz = nullptr;  // <z_j, mu>
  const A* mm = nullptr;  // <mu, mu>
  const A* sx = nullptr;  // cosine scales
  const A* sz = nullptr;
  const A* se = nullptr;
  const A* sf = nullptr;
  int64_t d = 0, k = 0;
};

template <typename T, typename A>
struct Params {
  LayerArgs<T, A> layer[kMaxLayers];
  int L = 0;
  bool grad = false, center = false, cosine = false;
  int64_t B = 0, M = 0, C = 0;
  const int64_t* perm = nullptr;  // clean rows sorted by label
  const int64_t* lab = nullptr;   // sorted labels (C for invalid ones)
  A* parts = nullptr;             // groups x B x C
  int64_t ntiles = 0, tiles_per_group = 0;
};

// explicit conversions: torch builds CUDA extensions with __CUDA_NO_HALF_CONVERSIONS__
__device__ __forceinline__ float to_acc(__half v, float) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v, float) { return __bfloat162float(v); }
__device__ __forceinline__ float to_acc(float v, float) { return v; }
__device__ __forceinline__ double to_acc(double v, double) { return v; }

template <typename T> __device__ __forceinline__ T zero_val();
template <> __device__ __forceinline__ __half zero_val<__half>() { return __float2half(0.f); }
template <> __device__ __forceinline__ __nv_bfloat16 zero_val<__nv_bfloat16>() { return __float2bfloat16(0.f); }

// ------------------------------------------------------------------------------------------------
// Row statistics: one warp per row; fixed-order butterfly reduction (deterministic).
// ------------------------------------------------------------------------------------------------
template <typename T, typename A>
__global__ void row_stats_kernel(const T* __restrict__ src, int64_t rows, int64_t d, const A* __restrict__ mu,
                                 A* __restrict__ dot_mu, A* __restrict__ scale) {
  const int lane = threadIdx.x & 31;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + (threadIdx.x >> 5);
  if (r >= rows) return;
  const T* row = src + r * d;
  A dm = A(0), ss = A(0);
  for (int64_t p = lane; p < d; p += 32) {
    const A v = to_acc(row[p], A(0));
    const A m = mu ? mu[p] : A(0);
    const A c = v - m;
    ss += c * c;
    dm += v * m;
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    ss += __shfl_xor_sync(0xffffffffu, ss, o);
    dm += __shfl_xor_sync(0xffffffffu, dm, o);
  }
  if (lane == 0) {
    if (dot_mu) dot_mu[r] = dm;
    if (scale) {
      const A n = sqrt(ss);
      scale[r] = n > A(0) ? A(1) / n : A(0);
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Gram tiles. Thread (ty, tx) = (tid / 16, tid % 16) owns rows ty*4 + a and columns tx*4 + b of the
// 64 x 64 tile. a_rows: batch rows i0.. of a (B x d); b_rows: clean rows perm[j0..] of b (M x d).
// ------------------------------------------------------------------------------------------------
template <typename T, typename A>
__device__ __forceinline__ void gram_cuda_core(const T* __restrict__ a, int64_t nA, const T* __restrict__ b,
                                               int64_t nB, const int64_t* __restrict__ perm, int64_t d,
                                               const A* __restrict__ mu, int64_t i0, int64_t j0,
                                               unsigned char* smem, A out[4][4]) {
  A* As = reinterpret_cast<A*>(smem);  // [kBK][kLdF]
  A* Bs = As + kBK * kLdF;             // [kBK][kLdF]
  const int tid = threadIdx.x, ty = tid / 16, tx = tid % 16;
#pragma unroll
  for (int u = 0; u < 4; ++u)
#pragma unroll
    for (int v = 0; v < 4; ++v) out[u][v] = A(0);
  for (int64_t p0 = 0; p0 < d; p0 += kBK) {
#pragma unroll
    for (int e = 0; e < (kTile * kBK) / kThreads; ++e) {
      const int idx = tid + e * kThreads;
      const int r = idx / kBK, c = idx % kBK;
      const int64_t p = p0 + c;
      const A m = (mu != nullptr && p < d) ? mu[p] : A(0);
      const int64_t gi = i0 + r;
      As[c * kLdF + r] = (gi < nA && p < d) ? to_acc(a[gi * d + p], A(0)) - m : A(0);
      const int64_t gj = j0 + r;
      Bs[c * kLdF + r] = (gj < nB && p < d) ? to_acc(b[perm[gj] * d + p], A(0)) - m : A(0);
    }
    __syncthreads();
#pragma unroll
    for (int c = 0; c < kBK; ++c) {
      A av[4], bv[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) av[u] = As[c * kLdF + ty * 4 + u];
#pragma unroll
      for (int v = 0; v < 4; ++v) bv[v] = Bs[c * kLdF + tx * 4 + v];
#pragma unroll
      for (int u = 0; u < 4; ++u)
#pragma unroll
        for (int v = 0; v < 4; ++v) out[u][v] += av[u] * bv[v];
    }
    __syncthreads();
  }
}

template <typename T>
__device__ __forceinline__ void gram_tensor_core(const T* __restrict__ a, int64_t nA, const T* __restrict__ b,
                                                 int64_t nB, const int64_t* __restrict__ perm, int64_t d,
                                                 int64_t i0, int64_t j0, unsigned char* smem, float out[4][4]) {
  using namespace nvcuda;
  T* Ah = reinterpret_cast<T*>(smem);                                  // [kTile][kLdH]
  T* Bh = Ah + kTile * kLdH;                                           // [kTile][kLdH]
  float* Cs = reinterpret_cast<float*>(smem + 2 * kTile * kLdH * sizeof(T));  // [kTile][kLdF]
  const int tid = threadIdx.x, warp = tid / 32;
  const int wr = warp / 2, wc = warp % 2;  // warp tile: rows wr*16 .. +16, columns wc*32 .. +32
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> c0, c1;
  wmma::fill_fragment(c0, 0.0f);
  wmma::fill_fragment(c1, 0.0f);
  for (int64_t p0 = 0; p0 < d; p0 += kBKH) {
#pragma unroll
    for (int e = 0; e < (kTile * kBKH) / kThreads; ++e) {
      const int idx = tid + e * kThreads;
      const int r = idx / kBKH, c = idx % kBKH;
      const int64_t p = p0 + c;
      const int64_t gi = i0 + r;
      Ah[r * kLdH + c] = (gi < nA && p < d) ? a[gi * d + p] : zero_val<T>();
      const int64_t gj = j0 + r;
      Bh[r * kLdH + c] = (gj < nB && p < d) ? b[perm[gj] * d + p] : zero_val<T>();
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kBKH; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb0, fb1;
      wmma::load_matrix_sync(fa, Ah + (wr * 16) * kLdH + kk, kLdH);
      wmma::load_matrix_sync(fb0, Bh + (wc * 32) * kLdH + kk, kLdH);
      wmma::load_matrix_sync(fb1, Bh + (wc * 32 + 16) * kLdH + kk, kLdH);
      wmma::mma_sync(c0, fa, fb0, c0);
      wmma::mma_sync(c1, fa, fb1, c1);
    }
    __syncthreads();
  }
  wmma::store_matrix_sync(Cs + (wr * 16) * kLdF + wc * 32, c0, kLdF, wmma::mem_row_major);
  wmma::store_matrix_sync(Cs + (wr * 16) * kLdF + wc * 32 + 16, c1, kLdF, wmma::mem_row_major);
  __syncthreads();
  const int ty = tid / 16, tx = tid % 16;
#pragma unroll
  for (int u = 0; u < 4; ++u)
#pragma unroll
    for (int v = 0; v < 4; ++v) out[u][v] = Cs[(ty * 4 + u) * kLdF + tx * 4 + v];
  __syncthreads();
}

template <typename T, typename A, bool kTC>
__device__ __forceinline__ void gram(const T* a, int64_t nA, const T* b, int64_t nB, const int64_t* perm, int64_t d,
                                     const A* mu, int64_t i0, int64_t j0, unsigned char* smem, A out[4][4]) {
  if constexpr (kTC) {
    gram_tensor_core<T>(a, nA, b, nB, perm, d, i0, j0, smem, out);  // centred afterwards
  } else {
    gram_cuda_core<T, A>(a, nA, b, nB, perm, d, mu, i0, j0, smem, out);
  }
}

template <typename A, bool kTC>
constexpr size_t smem_bytes() {
  constexpr size_t gram_b = kTC ? (2 * kTile * kLdH * 2 + kTile * kLdF * sizeof(float)) : (2 * kBK * kLdF * sizeof(A));
  constexpr size_t agg_b = kTile * kLdK * sizeof(A);
  return gram_b > agg_b ? gram_b : agg_b;
}

// ------------------------------------------------------------------------------------------------
// Main kernel: grid (row blocks, column groups), kThreads threads.
// ------------------------------------------------------------------------------------------------
template <typename T, typename A, bool kTC>
__global__ void __launch_bounds__(kThreads) pairwise_kernel(const Params<T, A> P) {
  __shared__ __align__(128) unsigned char smem[smem_bytes<A, kTC>()];
  __shared__ int64_t lab_s[kTile];
  const int tid = threadIdx.x, ty = tid / 16, tx = tid % 16;
  const int64_t i0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int64_t g = blockIdx.y;
  const int64_t t_begin = g * P.tiles_per_group;
  const int64_t t_end = min(P.ntiles, t_begin + P.tiles_per_group);
  A* part = P.parts + g * P.B * P.C;

  for (int64_t t = t_begin; t < t_end; ++t) {
    const int64_t j0 = t * kTile;
    if (tid < kTile) lab_s[tid] = (j0 + tid < P.M) ? P.lab[j0 + tid] : P.C;
    int64_t rows_i[4], cols_j[4];  // batch row / original clean row of each owned element (-1: none)
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int64_t i = i0 + ty * 4 + u;
      rows_i[u] = i < P.B ? i : -1;
      const int64_t j = j0 + tx * 4 + u;
      cols_j[u] = j < P.M ? P.perm[j] : -1;
    }
    A K[4][4];
#pragma unroll
    for (int u = 0; u < 4; ++u)
#pragma unroll
      for (int v = 0; v < 4; ++v) K[u][v] = A(0);

    for (int l = 0; l < P.L; ++l) {
      const LayerArgs<T, A>& ly = P.layer[l];
      A g1[4][4];
      gram<T, A, kTC>(ly.x, P.B, ly.z, P.M, P.perm, ly.d, P.center ? ly.mu : nullptr, i0, j0, smem, g1);
      if (kTC && P.center) {
        const A mm = *ly.mm;
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          const A rx = rows_i[u] >= 0 ? ly.rx[rows_i[u]] : A(0);
#pragma unroll
          for (int v = 0; v < 4; ++v) {
            const A rz = cols_j[v] >= 0 ? ly.rz[cols_j[v]] : A(0);
            g1[u][v] = g1[u][v] - rx - rz + mm;
          }
        }
      }
      if (P.cosine) {
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          const A sx = rows_i[u] >= 0 ? ly.sx[rows_i[u]] : A(0);
#pragma unroll
          for (int v = 0; v < 4; ++v) g1[u][v] *= sx * (cols_j[v] >= 0 ? ly.sz[cols_j[v]] : A(0));
        }
      }
      if (P.grad) {
        A g2[4][4];
        gram<T, A, kTC>(ly.e, P.B, ly.f, P.M, P.perm, ly.k, nullptr, i0, j0, smem, g2);
        if (P.cosine) {
#pragma unroll
          for (int u = 0; u < 4; ++u) {
            const A se = rows_i[u] >= 0 ? ly.se[rows_i[u]] : A(0);
#pragma unroll
            for (int v = 0; v < 4; ++v) g2[u][v] *= se * (cols_j[v] >= 0 ? ly.sf[cols_j[v]] : A(0));
          }
        }
#pragma unroll
        for (int u = 0; u < 4; ++u)
#pragma unroll
          for (int v = 0; v < 4; ++v) g1[u][v] *= g2[u][v];
      }
#pragma unroll
      for (int u = 0; u < 4; ++u)
#pragma unroll
        for (int v = 0; v < 4; ++v) K[u][v] += g1[u][v];
    }

    // stage K in shared memory (the gram helpers end with __syncthreads, so smem is free), then one
    // thread per batch row adds the tile's segmented class sums to its row of the partial buffer
    A* Ks = reinterpret_cast<A*>(smem);
#pragma unroll
    for (int u = 0; u < 4; ++u)
#pragma unroll
      for (int v = 0; v < 4; ++v) Ks[(ty * 4 + u) * kLdK + tx * 4 + v] = K[u][v];
    __syncthreads();
    if (tid < kTile && i0 + tid < P.B) {
      A* prow = part + (i0 + tid) * P.C;
      const int64_t ncols = min(static_cast<int64_t>(kTile), P.M - j0);
      int64_t j = 0;
      while (j < ncols) {
        const int64_t c = lab_s[j];
        A sum = A(0);
        for (; j < ncols && lab_s[j] == c; ++j) sum += Ks[tid * kLdK + j];
        if (c >= 0 && c < P.C) prow[c] += sum;
      }
    }
    __syncthreads();
  }
}

template <typename A>
__global__ void reduce_parts_kernel(const A* __restrict__ parts, int64_t groups, int64_t BC, int64_t C,
                                    const A* __restrict__ w, A* __restrict__ S) {
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < BC;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    A acc = A(0);
    for (int64_t g = 0; g < groups; ++g) acc += parts[g * BC + idx];
    S[idx] = w[idx % C] * acc;
  }
}

template <typename A>
__global__ void fbr_epilogue_kernel(const A* __restrict__ S, const A* __restrict__ w, const int64_t* __restrict__ y,
                                    int64_t B, int64_t C, int shift, A alpha, A* __restrict__ out) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < B;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = fbr::fbr_row<A>(S + i * C, w, C, y[i], shift, alpha);
}

inline unsigned int blocks_for(int64_t n, int threads) {
  const int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min<int64_t>(b, 65535)));
}

template <typename T> struct CudaType { using type = T; };
template <> struct CudaType<at::Half> { using type = __half; };
template <> struct CudaType<at::BFloat16> { using type = __nv_bfloat16; };

template <typename TA, typename A, bool kTC>
void run_similarity(const fbr::Shape& s, at::TensorList xs, at::TensorList zs, at::TensorList mus, at::TensorList es,
                    at::TensorList fs, const at::Tensor& clean_y, const at::Tensor& w, bool cosine, at::Tensor& S) {
  using T = typename CudaType<TA>::type;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const auto accopt = xs[0].options().dtype(s.acc_dtype);
  std::vector<at::Tensor> keep;
  auto cont = [&](const at::Tensor& t) {
    at::Tensor c = t.contiguous();
    keep.push_back(c);
    return c;
  };
  auto stats = [&](const T* src, int64_t rows, int64_t d, const A* mu, bool want_dot, bool want_scale,
                   const A** dot_out, const A** scale_out) {
    at::Tensor dot, sc;
    if (want_dot) { dot = at::empty({rows}, accopt); keep.push_back(dot); *dot_out = dot.data_ptr<A>(); }
    if (want_scale) { sc = at::empty({rows}, accopt); keep.push_back(sc); *scale_out = sc.data_ptr<A>(); }
    if (rows == 0 || (!want_dot && !want_scale)) return;
    const int rows_per_block = kThreads / 32;
    const int64_t nb = (rows + rows_per_block - 1) / rows_per_block;
    TORCH_CHECK(nb <= std::numeric_limits<int32_t>::max(), "fastreweight: too many rows for the CUDA kernels: ", rows);
    row_stats_kernel<T, A><<<static_cast<unsigned int>(nb), kThreads, 0, stream>>>(
        src, rows, d, mu, want_dot ? const_cast<A*>(*dot_out) : nullptr, want_scale ? const_cast<A*>(*scale_out) : nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };

  Params<T, A> P;
  P.L = static_cast<int>(s.L);
  P.grad = s.grad;
  P.center = s.center;
  P.cosine = cosine;
  P.B = s.B;
  P.M = s.M;
  P.C = s.C;
  for (int64_t l = 0; l < s.L; ++l) {
    LayerArgs<T, A>& ly = P.layer[l];
    at::Tensor x = cont(xs[l]), z = cont(zs[l]);
    ly.x = reinterpret_cast<const T*>(x.data_ptr());
    ly.z = reinterpret_cast<const T*>(z.data_ptr());
    ly.d = x.size(1);
    if (s.center) {
      at::Tensor mu = cont(mus[l]);
      ly.mu = mu.data_ptr<A>();
      if (kTC) {
        at::Tensor mm = mu.dot(mu);
        keep.push_back(mm);
        ly.mm = mm.data_ptr<A>();
      }
    }
    const bool dots = kTC && s.center;
    stats(ly.x, s.B, ly.d, ly.mu, dots, cosine, &ly.rx, &ly.sx);
    stats(ly.z, s.M, ly.d, ly.mu, dots, cosine, &ly.rz, &ly.sz);
    if (s.grad) {
      at::Tensor e = cont(es[l]), f = cont(fs[l]);
      ly.e = reinterpret_cast<const T*>(e.data_ptr());
      ly.f = reinterpret_cast<const T*>(f.data_ptr());
      ly.k = e.size(1);
      stats(ly.e, s.B, ly.k, nullptr, false, cosine, nullptr, &ly.se);
      stats(ly.f, s.M, ly.k, nullptr, false, cosine, nullptr, &ly.sf);
    }
  }

  // clean rows sorted by label, invalid labels (outside [0, C)) last
  at::Tensor u = clean_y.contiguous();
  at::Tensor key = u.masked_fill(u.lt(0).logical_or(u.ge(s.C)), s.C);
  auto sorted = key.sort(/*stable=*/true, /*dim=*/0, /*descending=*/false);
  at::Tensor lab = std::get<0>(sorted).contiguous();
  at::Tensor perm = std::get<1>(sorted).contiguous();
  P.lab = lab.data_ptr<int64_t>();
  P.perm = perm.data_ptr<int64_t>();

  const int64_t nrb = (s.B + kTile - 1) / kTile;
  P.ntiles = (s.M + kTile - 1) / kTile;
  int sms = 1;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, xs[0].device().index()));
  int64_t groups = 1;
  if (P.ntiles > 0 && nrb > 0) {
    groups = std::max<int64_t>(1, (2 * static_cast<int64_t>(sms) + nrb - 1) / nrb);
    groups = std::min<int64_t>(groups, P.ntiles);
    const int64_t cap = std::max<int64_t>(1, (int64_t(1) << 26) / std::max<int64_t>(1, s.B * s.C));
    groups = std::min<int64_t>({groups, cap, int64_t(65535)});
    P.tiles_per_group = (P.ntiles + groups - 1) / groups;
    groups = (P.ntiles + P.tiles_per_group - 1) / P.tiles_per_group;
  }
  TORCH_CHECK(nrb <= std::numeric_limits<int32_t>::max(), "fastreweight: batch too large for the CUDA kernels: ", s.B);
  at::Tensor parts = at::zeros({groups, s.B, s.C}, accopt);
  P.parts = parts.data_ptr<A>();
  if (P.ntiles > 0 && nrb > 0) {
    dim3 grid(static_cast<unsigned int>(nrb), static_cast<unsigned int>(groups));
    pairwise_kernel<T, A, kTC><<<grid, kThreads, 0, stream>>>(P);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  const int64_t BC = s.B * s.C;
  if (BC > 0) {
    reduce_parts_kernel<A><<<blocks_for(BC, kThreads), kThreads, 0, stream>>>(P.parts, groups, BC, s.C,
                                                                            w.data_ptr<A>(), S.data_ptr<A>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  // keep / parts / lab / perm are freed through the caching allocator on this stream: safe.
}

at::Tensor pairwise_similarity(const fbr::Shape& s, at::TensorList xs, at::TensorList zs, at::TensorList mus,
                               at::TensorList es, at::TensorList fs, const at::Tensor& clean_y,
                               const at::Tensor& class_weight, bool cosine) {
  at::Tensor S = at::empty({s.B, s.C}, xs[0].options().dtype(s.acc_dtype));
  at::Tensor w = class_weight.contiguous();
  switch (s.in_dtype) {
    case at::kFloat: run_similarity<float, float, false>(s, xs, zs, mus, es, fs, clean_y, w, cosine, S); break;
    case at::kDouble: run_similarity<double, double, false>(s, xs, zs, mus, es, fs, clean_y, w, cosine, S); break;
    case at::kHalf: run_similarity<at::Half, float, true>(s, xs, zs, mus, es, fs, clean_y, w, cosine, S); break;
    case at::kBFloat16: run_similarity<at::BFloat16, float, true>(s, xs, zs, mus, es, fs, clean_y, w, cosine, S); break;
    default: TORCH_CHECK(false, "fastreweight: unsupported dtype ", s.in_dtype);
  }
  return S;
}

at::Tensor fbr_epilogue(const fbr::Shape& s, const at::Tensor& S, const at::Tensor& y, const at::Tensor& class_weight,
                        fbr::Shift sh, double alpha) {
  at::Tensor out = at::empty({s.B}, S.options());
  if (s.B == 0) return out;
  at::Tensor yc = y.contiguous();
  at::Tensor w = class_weight.contiguous();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (s.acc_dtype == at::kDouble) {
    fbr_epilogue_kernel<double><<<blocks_for(s.B, kThreads), kThreads, 0, stream>>>(
        S.data_ptr<double>(), w.data_ptr<double>(), yc.data_ptr<int64_t>(), s.B, s.C, int(sh), alpha,
        out.data_ptr<double>());
  } else {
    fbr_epilogue_kernel<float><<<blocks_for(s.B, kThreads), kThreads, 0, stream>>>(
        S.data_ptr<float>(), w.data_ptr<float>(), yc.data_ptr<int64_t>(), s.B, s.C, int(sh),
        static_cast<float>(alpha), out.data_ptr<float>());
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace fbr_cuda
