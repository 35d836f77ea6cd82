// The epilogue of a synthesis layer's modulated convolution in one pass over its output:
// demodulation, noise, bias, activation, gain and clamp (maths in kernels.cuh). The convolution
// itself stays with cuDNN on the style-scaled batch, which beats a grouped convolution.
#include "launch.cuh"

template <typename T, typename I>
__global__ void modconv_epilogue_kernel(T* __restrict__ y, const float* __restrict__ d,
                                        const float* __restrict__ noise, const float* __restrict__ bias, I total,
                                        I C, I HW, bool cl, bool noise_per_sample, int act, double alpha, double gain,
                                        double clamp) {
  for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < total; i += (I)blockDim.x * gridDim.x)
    modconv_epilogue_element<T, I>(i, y, d, noise, bias, C, HW, cl, noise_per_sample, act, alpha, gain, clamp);
}

int launch_modconv_epilogue(int dtype, void* y, const float* d, const float* noise, const float* bias, int64_t n,
                            int64_t c, int64_t hw, bool cl, bool noise_per_sample, int act, double alpha, double gain,
                            double clamp, void* stream) {
  const int64_t total = n * c * hw;
  if (total == 0) return 0;
  SF_DISPATCH(dtype, total, (modconv_epilogue_kernel<T, I><<<grid_for(total, 256), 256, 0, (cudaStream_t)stream>>>(
      (T*)y, d, noise, bias, (I)total, (I)c, (I)hw, cl, noise_per_sample, act, alpha, gain, clamp)));
  return (int)cudaGetLastError();
}
