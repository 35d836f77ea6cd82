// bias + activation + gain + clamp, and its first-order gradient.
// Works on any dense memory layout (contiguous or channels_last): the bias index of the element
// at memory offset i is (i / stride_dim) % size_dim.
#include "common.cuh"

enum Act { A_LINEAR = 0, A_RELU, A_LRELU, A_TANH, A_SIGMOID, A_ELU, A_SELU, A_SOFTPLUS, A_SWISH };

__device__ __forceinline__ float act_fwd(int act, float x, float alpha) {
  switch (act) {
    case A_RELU: return x > 0.f ? x : 0.f;
    case A_LRELU: return x > 0.f ? x : x * alpha;
    case A_TANH: return tanhf(x);
    case A_SIGMOID: return 1.f / (1.f + expf(-x));
    case A_ELU: return x > 0.f ? x : expm1f(x);
    case A_SELU: return 1.0507009873554805f * (x > 0.f ? x : 1.6732632423543772f * expm1f(x));
    case A_SOFTPLUS: return x > 20.f ? x : log1pf(expf(x));
    case A_SWISH: return x / (1.f + expf(-x));
    default: return x;
  }
}

// d act(x) / dx
__device__ __forceinline__ float act_grad(int act, float x, float alpha) {
  switch (act) {
    case A_RELU: return x > 0.f ? 1.f : 0.f;
    case A_LRELU: return x > 0.f ? 1.f : alpha;
    case A_TANH: { float t = tanhf(x); return 1.f - t * t; }
    case A_SIGMOID: { float s = 1.f / (1.f + expf(-x)); return s * (1.f - s); }
    case A_ELU: return x > 0.f ? 1.f : expf(x);
    case A_SELU: return 1.0507009873554805f * (x > 0.f ? 1.f : 1.6732632423543772f * expf(x));
    case A_SOFTPLUS: return 1.f / (1.f + expf(-x));
    case A_SWISH: { float s = 1.f / (1.f + expf(-x)); return s + x * s * (1.f - s); }
    default: return 1.f;
  }
}

template <typename T>
__global__ void bias_act_forward_kernel(const T* __restrict__ x, const T* __restrict__ b, T* __restrict__ y,
                                        int64_t n, int64_t stride_dim, int64_t size_dim, int act, float alpha,
                                        float gain, float clamp) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)blockDim.x * gridDim.x) {
    float v = to_float(x[i]);
    if (b) v += to_float(b[(i / stride_dim) % size_dim]);
    v = act_fwd(act, v, alpha) * gain;
    if (clamp >= 0.f) v = fminf(fmaxf(v, -clamp), clamp);
    y[i] = from_float<T>(v);
  }
}

// dx = dy * gain * act'(x + b), zero where the clamp was active.
template <typename T>
__global__ void bias_act_backward_kernel(const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ b,
                                         T* __restrict__ dx, int64_t n, int64_t stride_dim, int64_t size_dim, int act,
                                         float alpha, float gain, float clamp) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)blockDim.x * gridDim.x) {
    float v = to_float(x[i]);
    if (b) v += to_float(b[(i / stride_dim) % size_dim]);
    float g = to_float(dy[i]) * gain * act_grad(act, v, alpha);
    if (clamp >= 0.f && fabsf(act_fwd(act, v, alpha) * gain) >= clamp) g = 0.f;
    dx[i] = from_float<T>(g);
  }
}

static int blocks_for(int64_t n) {
  int64_t b = (n + 255) / 256;
  return (int)(b > 65535 * 8 ? 65535 * 8 : (b < 1 ? 1 : b));
}

#define DISPATCH(dtype, CALL)                                                        \
  switch (dtype) {                                                                   \
    case DT_FLOAT: { typedef float T; CALL; break; }                                 \
    case DT_HALF: { typedef __half T; CALL; break; }                                 \
    case DT_BFLOAT16: { typedef __nv_bfloat16 T; CALL; break; }                      \
    case DT_DOUBLE: { typedef double T; CALL; break; }                               \
    default: return cudaErrorInvalidValue;                                           \
  }

cudaError_t launch_bias_act_forward(int dtype, const void* x, const void* b, void* y, int64_t n, int64_t stride_dim,
                                    int64_t size_dim, int act, float alpha, float gain, float clamp,
                                    cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  DISPATCH(dtype, (bias_act_forward_kernel<T><<<blocks_for(n), 256, 0, stream>>>(
      (const T*)x, (const T*)b, (T*)y, n, stride_dim, size_dim, act, alpha, gain, clamp)));
  return cudaGetLastError();
}

cudaError_t launch_bias_act_backward(int dtype, const void* dy, const void* x, const void* b, void* dx, int64_t n,
                                     int64_t stride_dim, int64_t size_dim, int act, float alpha, float gain,
                                     float clamp, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  DISPATCH(dtype, (bias_act_backward_kernel<T><<<blocks_for(n), 256, 0, stream>>>(
      (const T*)dy, (const T*)x, (const T*)b, (T*)dx, n, stride_dim, size_dim, act, alpha, gain, clamp)));
  return cudaGetLastError();
}
