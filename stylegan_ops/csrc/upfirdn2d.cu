// Zero-insertion up-sampling, padding (negative = cropping), 2-D FIR filtering and down-sampling;
// one thread per output pixel (maths in kernels.cuh).
#include "launch.cuh"

template <typename T, typename I>
__global__ void upfirdn2d_kernel(const T* __restrict__ x, const float* __restrict__ g, T* __restrict__ y, I total,
                                 int h, int w, int oh, int ow, int fh, int fw, int upx, int upy, int downx, int downy,
                                 int px0, int py0) {
  for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < total; i += (I)blockDim.x * gridDim.x)
    upfirdn2d_element<T, I>(i, x, g, y, h, w, oh, ow, fh, fw, upx, upy, downx, downy, px0, py0);
}

int launch_upfirdn2d(int dtype, const void* x, const float* g, void* y, int64_t nc, int h, int w, int oh, int ow,
                     int fh, int fw, int upx, int upy, int downx, int downy, int px0, int py0, void* stream) {
  const int64_t total = nc * (int64_t)oh * ow;
  if (total == 0) return 0;
  // the input offset c*h*w must fit the index type too
  const int64_t span = total > nc * (int64_t)h * w ? total : nc * (int64_t)h * w;
  SF_DISPATCH(dtype, span, (upfirdn2d_kernel<T, I><<<grid_for(total, 256), 256, 0, (cudaStream_t)stream>>>(
      (const T*)x, g, (T*)y, (I)total, h, w, oh, ow, fh, fw, upx, upy, downx, downy, px0, py0)));
  return (int)cudaGetLastError();
}
