// bias + activation + gain + clamp, and its first-order gradient (maths in kernels.cuh).
#include "launch.cuh"

template <typename T, typename I>
__global__ void bias_act_forward_kernel(const T* __restrict__ x, const T* __restrict__ b, T* __restrict__ y, I n,
                                        I stride_dim, I size_dim, int act, double alpha, double gain, double clamp) {
  for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < n; i += (I)blockDim.x * gridDim.x)
    bias_act_forward_element<T, I>(i, x, b, y, stride_dim, size_dim, act, alpha, gain, clamp);
}

template <typename T, typename I>
__global__ void bias_act_backward_kernel(const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ b,
                                         T* __restrict__ dx, I n, I stride_dim, I size_dim, int act, double alpha,
                                         double gain, double clamp) {
  for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < n; i += (I)blockDim.x * gridDim.x)
    bias_act_backward_element<T, I>(i, dy, x, b, dx, stride_dim, size_dim, act, alpha, gain, clamp);
}

int launch_bias_act_forward(int dtype, const void* x, const void* b, void* y, int64_t n, int64_t stride_dim,
                            int64_t size_dim, int act, double alpha, double gain, double clamp, void* stream) {
  if (n == 0) return 0;
  SF_DISPATCH(dtype, n, (bias_act_forward_kernel<T, I><<<grid_for(n, 256), 256, 0, (cudaStream_t)stream>>>(
      (const T*)x, (const T*)b, (T*)y, (I)n, (I)stride_dim, (I)size_dim, act, alpha, gain, clamp)));
  return (int)cudaGetLastError();
}

int launch_bias_act_backward(int dtype, const void* dy, const void* x, const void* b, void* dx, int64_t n,
                             int64_t stride_dim, int64_t size_dim, int act, double alpha, double gain, double clamp,
                             void* stream) {
  if (n == 0) return 0;
  SF_DISPATCH(dtype, n, (bias_act_backward_kernel<T, I><<<grid_for(n, 256), 256, 0, (cudaStream_t)stream>>>(
      (const T*)dy, (const T*)x, (const T*)b, (T*)dx, (I)n, (I)stride_dim, (I)size_dim, act, alpha, gain, clamp)));
  return (int)cudaGetLastError();
}

extern "C" const char* synthface_cuda_error_string(int code) { return cudaGetErrorString((cudaError_t)code); }
