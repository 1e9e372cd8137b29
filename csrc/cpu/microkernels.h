// fastreweight: CPU micro-kernel building blocks shared by the similarity kernels
// (similarity_pairwise.cpp, similarity_prototype.cpp): 32-byte vector types, the x86-64 clones
// attribute, the row centring / cosine scaling and a horizontal vector sum.
#pragma once

#include <cmath>
#include <cstdint>

namespace fbr_cpu {

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


#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(FBR_NO_CLONES)
#define FBR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FBR_CLONES
#endif

// dst (row-major, n x d) = (src row - mu) * (cosine ? 1/||src row - mu|| : 1); 0 scale for a zero row.
template <typename T>
inline void center_row(const T* src, int64_t d, const T* mu, bool cosine, T* dst) {
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

template <typename T>
inline T hsum(typename VecOf<T>::V v) {
  T acc = T(0);
  for (int64_t j = 0; j < NR_of<T>::lanes; ++j) acc += v[j];
  return acc;
}

}  // namespace fbr_cpu
