// Zero-insertion up-sampling, padding (negative = cropping), 2-D FIR filtering and down-sampling.
// x: [NC, H, W] contiguous; g: [fh, fw] float, applied as a correlation (the caller flips the
// filter for a true convolution and folds the gain in). One thread per output pixel.
#include "common.cuh"

template <typename T>
__global__ void upfirdn2d_kernel(const T* __restrict__ x, const float* __restrict__ g, T* __restrict__ y,
                                 int64_t nc, int h, int w, int oh, int ow, int fh, int fw, int upx, int upy,
                                 int downx, int downy, int px0, int py0) {
  const int64_t total = nc * (int64_t)oh * ow;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)blockDim.x * gridDim.x) {
    const int ox = (int)(i % ow);
    const int oy = (int)((i / ow) % oh);
    const int64_t c = i / ((int64_t)ow * oh);
    const T* xc = x + c * (int64_t)h * w;
    float acc = 0.f;
    for (int ky = 0; ky < fh; ++ky) {
      const int Y = oy * downy + ky - py0;  // position in the up-sampled signal
      if (Y < 0 || Y % upy != 0) continue;
      const int iy = Y / upy;
      if (iy >= h) continue;
      for (int kx = 0; kx < fw; ++kx) {
        const int X = ox * downx + kx - px0;
        if (X < 0 || X % upx != 0) continue;
        const int ix = X / upx;
        if (ix >= w) continue;
        acc += g[ky * fw + kx] * to_float(xc[(int64_t)iy * w + ix]);
      }
    }
    y[i] = from_float<T>(acc);
  }
}

cudaError_t launch_upfirdn2d(int dtype, const void* x, const float* g, void* y, int64_t nc, int h, int w, int oh,
                             int ow, int fh, int fw, int upx, int upy, int downx, int downy, int px0, int py0,
                             cudaStream_t stream) {
  const int64_t total = nc * (int64_t)oh * ow;
  if (total == 0) return cudaSuccess;
  int64_t blocks = (total + 255) / 256;
  if (blocks > 65535 * 8) blocks = 65535 * 8;
#define LAUNCH(T) upfirdn2d_kernel<T><<<(int)blocks, 256, 0, stream>>>((const T*)x, g, (T*)y, nc, h, w, oh, ow, fh, \
                                                                      fw, upx, upy, downx, downy, px0, py0)
  switch (dtype) {
    case DT_FLOAT: LAUNCH(float); break;
    case DT_HALF: LAUNCH(__half); break;
    case DT_BFLOAT16: LAUNCH(__nv_bfloat16); break;
    case DT_DOUBLE: LAUNCH(double); break;
    default: return cudaErrorInvalidValue;
  }
#undef LAUNCH
  return cudaGetLastError();
}
