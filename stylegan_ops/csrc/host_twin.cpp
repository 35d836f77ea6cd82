// The CPU twin of the CUDA extension: the bindings of ops.cpp over plain loops that call the very
// element functions the kernels call (kernels.cuh). Built only by the test suite, so that the
// kernels' index arithmetic and maths are checked against the PyTorch ops on machines without a
// GPU; only the launch (grid-stride loop, streams) is left to the GPU tests.
#include <torch/extension.h>
#include <climits>
#include <cstdlib>
#include "kernels.cuh"

namespace {
// The kernels' index-type rule; SYNTHFACE_TWIN_WIDE_INDEX=1 forces the 64-bit branch.
bool narrow_index(int64_t n) { return n <= (int64_t)INT_MAX / 2 && !std::getenv("SYNTHFACE_TWIN_WIDE_INDEX"); }

template <typename F> int dispatch(int dtype, int64_t n, F body) {
  auto with_t = [&](auto tag_t) {
    using T = decltype(tag_t);
    if (narrow_index(n)) body(T(), int32_t()); else body(T(), int64_t());
  };
  switch (dtype) {
    case DT_FLOAT: with_t(float()); return 0;
    case DT_HALF: with_t(c10::Half()); return 0;
    case DT_BFLOAT16: with_t(c10::BFloat16()); return 0;
    case DT_DOUBLE: with_t(double()); return 0;
    default: return 1;
  }
}
}  // namespace

int launch_bias_act_forward(int dtype, const void* x, const void* b, void* y, int64_t n, int64_t stride_dim,
                            int64_t size_dim, int act, double alpha, double gain, double clamp, void*) {
  return dispatch(dtype, n, [&](auto t, auto i0) {
    using T = decltype(t); using I = decltype(i0);
    for (I i = 0; i < (I)n; ++i)
      bias_act_forward_element<T, I>(i, (const T*)x, (const T*)b, (T*)y, (I)stride_dim, (I)size_dim, act, alpha,
                                     gain, clamp);
  });
}

int launch_bias_act_backward(int dtype, const void* dy, const void* x, const void* b, void* dx, int64_t n,
                             int64_t stride_dim, int64_t size_dim, int act, double alpha, double gain, double clamp,
                             void*) {
  return dispatch(dtype, n, [&](auto t, auto i0) {
    using T = decltype(t); using I = decltype(i0);
    for (I i = 0; i < (I)n; ++i)
      bias_act_backward_element<T, I>(i, (const T*)dy, (const T*)x, (const T*)b, (T*)dx, (I)stride_dim,
                                      (I)size_dim, act, alpha, gain, clamp);
  });
}

int launch_upfirdn2d(int dtype, const void* x, const float* g, void* y, int64_t nc, int h, int w, int oh, int ow,
                     int fh, int fw, int upx, int upy, int downx, int downy, int px0, int py0, void*) {
  const int64_t total = nc * (int64_t)oh * ow;
  const int64_t span = total > nc * (int64_t)h * w ? total : nc * (int64_t)h * w;
  return dispatch(dtype, span, [&](auto t, auto i0) {
    using T = decltype(t); using I = decltype(i0);
    for (I i = 0; i < (I)total; ++i)
      upfirdn2d_element<T, I>(i, (const T*)x, g, (T*)y, h, w, oh, ow, fh, fw, upx, upy, downx, downy, px0, py0);
  });
}

int launch_modconv_epilogue(int dtype, void* y, const float* d, const float* noise, const float* bias, int64_t n,
                            int64_t c, int64_t hw, bool cl, bool noise_per_sample, int act, double alpha, double gain,
                            double clamp, void*) {
  const int64_t total = n * c * hw;
  return dispatch(dtype, total, [&](auto t, auto i0) {
    using T = decltype(t); using I = decltype(i0);
    for (I i = 0; i < (I)total; ++i)
      modconv_epilogue_element<T, I>(i, (T*)y, d, noise, bias, (I)c, (I)hw, cl, noise_per_sample, act, alpha, gain,
                                     clamp);
  });
}

extern "C" const char* synthface_cuda_error_string(int code) {
  return code == 1 ? "unsupported dtype code" : "unknown error";
}

#define SF_HOST_TWIN
#include "ops.cpp"
