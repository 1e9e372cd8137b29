#!/usr/bin/env bash
# Compile-only check of the CUDA library's sources (fastreweight/csrc_backend/build_config.py,
# CUDA_SOURCES): every .cu for sm_80 and sm_90a, every host .cpp once (object files, nothing is linked
# or run).
#
# Works without a CUDA build of torch: the CPU wheel ships the ATen/c10 headers, including c10/cuda,
# except the CMake-generated c10/cuda/impl/cuda_cmake_macros.h, which C10_CUDA_NO_CMAKE_CONFIGURE_FILE
# skips (it only defines the Windows DLL export switch). The flags mirror what
# torch.utils.cpp_extension.CUDAExtension passes (COMMON_NVCC_FLAGS, C++20, the CXX11 ABI switch).
#
# usage: csrc/compile_cuda_check.sh [outdir]      env: NVCC (default: nvcc on PATH), PYTHON
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$(mktemp -d)}"
NVCC="${NVCC:-nvcc}"
PYTHON="${PYTHON:-python}"
command -v "$NVCC" >/dev/null || { echo "compile_cuda_check: nvcc not found" >&2; exit 2; }
read -r TORCH_INC PY_INC ABI < <("$PYTHON" - <<'PY'
import os, sysconfig, torch
print(os.path.join(os.path.dirname(torch.__file__), "include"), sysconfig.get_paths()["include"], int(torch._C._GLIBCXX_USE_CXX11_ABI))
PY
)
read -r -a SOURCES < <("$PYTHON" "$here/../fastreweight/csrc_backend/build_config.py" cuda-sources)
mkdir -p "$out"
common=(-std=c++20 -O3 -Xcompiler -fPIC
        -I"$here" -I"$TORCH_INC" -I"$TORCH_INC/torch/csrc/api/include" -I"$PY_INC"
        -DC10_CUDA_NO_CMAKE_CONFIGURE_FILE -D_GLIBCXX_USE_CXX11_ABI="$ABI" -DTORCH_EXTENSION_NAME=_C_cuda)
status=0
for src in "${SOURCES[@]}"; do
  base="$(basename "${src%.*}")"
  if [[ "$src" == *.cu ]]; then
    for arch in 80 90a; do
      echo "nvcc -c $src for sm_${arch}"
      "$NVCC" -c "$here/$src" -o "$out/${base}_sm${arch}.o" "${common[@]}" \
          -gencode "arch=compute_${arch},code=sm_${arch}" \
          -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__ \
          -D__CUDA_NO_HALF2_OPERATORS__ --expt-relaxed-constexpr \
          -Xptxas -warn-spills ${NVCC_EXTRA:-} || status=1
    done
  else
    echo "nvcc -c $src (host code)"
    "$NVCC" -c "$here/$src" -o "$out/${base}_host.o" "${common[@]}" ${NVCC_EXTRA:-} || status=1
  fi
done
[ $status -eq 0 ] && echo "compile_cuda_check: OK ($out)"
exit $status
