// fastreweight: the FBR epilogue of one row of S (SPEC §3.4), shared by the CPU kernels
// (cpu/epilogue.cpp, cpu/similarity_prototype.cpp) and the CUDA epilogue kernel.
#pragma once

#include "checks.h"  // fbr::Shift

#include <cstdint>

namespace fbr {

// The FBR epilogue for one row (SPEC §3.4), written to match reference.fbr_from_similarity.
// S: the row's C class similarities; w: class weights (> 0 exactly for present classes).
template <typename T>
#ifdef __CUDACC__
__host__ __device__
#endif
inline T fbr_row(const T* S, const T* w, int64_t C, int64_t y, int shift, T alpha) {
  const bool in_range = y >= 0 && y < C;
  const int64_t yc = y < 0 ? 0 : (y >= C ? C - 1 : y);
  if (!in_range || !(w[yc] > T(0))) return T(0);
  T b = T(0);
  if (shift == static_cast<int>(Shift::Max)) {
    bool any = false;
    T m = T(0);
    for (int64_t c = 0; c < C; ++c)
      if (c != yc && w[c] > T(0) && (!any || S[c] > m)) { m = S[c]; any = true; }
    b = any ? m : T(0);
  } else if (shift == static_cast<int>(Shift::Mean)) {
    T sum = T(0);
    int64_t n = 0;
    for (int64_t c = 0; c < C; ++c)
      if (c != yc && w[c] > T(0)) { sum += S[c]; ++n; }
    b = sum / static_cast<T>(n > 0 ? n : 1);
  } else if (shift == static_cast<int>(Shift::Second)) {
    // second-largest over present classes (own label included); k = min(2, C) as torch.topk
    bool have1 = false, have2 = false;
    T m1 = T(0), m2 = T(0);
    for (int64_t c = 0; c < C; ++c) {
      if (!(w[c] > T(0))) continue;
      const T v = S[c];
      if (!have1 || v > m1) {
        if (have1) { m2 = m1; have2 = true; }
        m1 = v; have1 = true;
      } else if (!have2 || v > m2) {
        m2 = v; have2 = true;
      }
    }
    if (C == 1) b = have1 ? m1 : T(0);
    else b = have2 ? m2 : T(0);
  }
  T d = S[yc] - b;
  if (alpha != T(0)) {
    T comp = T(0);
    for (int64_t c = 0; c < C; ++c)
      if (c != yc && w[c] > T(0)) comp += S[c] - b;
    d = d - alpha * comp;
  }
  return d;
}

}  // namespace fbr
