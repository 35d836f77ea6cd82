// Launch helpers for the kernels: dtype and index-type dispatch, grid size.
#pragma once
#include <cuda_runtime.h>
#include <climits>
#include "kernels.cuh"

static inline int grid_for(int64_t n, int threads) {
  int64_t b = (n + threads - 1) / threads;
  return (int)(b > 65535 * 8 ? 65535 * 8 : (b < 1 ? 1 : b));
}

// Runs CALL with T bound to the storage type of `dtype` and I to the narrowest index type
// that can address `n` elements (with room for the grid-stride step past the end).
#define SF_DISPATCH(dtype, n, CALL)                                              \
  do {                                                                           \
    if ((n) <= (int64_t)INT_MAX / 2) {                                           \
      typedef int32_t I;                                                         \
      SF_DISPATCH_T(dtype, CALL);                                                \
    } else {                                                                     \
      typedef int64_t I;                                                         \
      SF_DISPATCH_T(dtype, CALL);                                                \
    }                                                                            \
  } while (0)

#define SF_DISPATCH_T(dtype, CALL)                                               \
  switch (dtype) {                                                               \
    case DT_FLOAT: { typedef float T; CALL; break; }                             \
    case DT_HALF: { typedef __half T; CALL; break; }                             \
    case DT_BFLOAT16: { typedef __nv_bfloat16 T; CALL; break; }                  \
    case DT_DOUBLE: { typedef double T; CALL; break; }                           \
    default: return (int)cudaErrorInvalidValue;                                  \
  }

// Error codes cross into ops.cpp as plain ints so that the bindings need no CUDA headers.
extern "C" const char* synthface_cuda_error_string(int code);
