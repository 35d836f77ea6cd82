// The per-element maths of synthface's StyleGAN2 kernels, shared by the CUDA kernels (*.cu) and
// by their CPU twin (host_twin.cpp), which the CPU test suite checks against the PyTorch ops.
// Each *_element function computes output element i of its op; a kernel is a grid-stride loop
// over i, the twin a plain loop. I is the index type: 32-bit when the tensor allows (integer
// division is much cheaper on a GPU), 64-bit otherwise.
#pragma once
#include <cstdint>
#include <math.h>

#ifdef __CUDACC__
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#define SF_HD __host__ __device__ __forceinline__
#else
#define SF_HD inline
#endif

// Maths runs in float for the 16- and 32-bit types and in double for double (so that float64
// gradient checks through the kernels are meaningful).
template <typename T> struct Acc { typedef float type; };
template <> struct Acc<double> { typedef double type; };
template <typename T> using acc_t = typename Acc<T>::type;

template <typename T> SF_HD acc_t<T> to_acc(T v) { return static_cast<acc_t<T>>(v); }
template <typename T> SF_HD T from_acc(acc_t<T> v) { return static_cast<T>(v); }
#ifdef __CUDACC__
template <> SF_HD float to_acc<__half>(__half v) { return __half2float(v); }
template <> SF_HD float to_acc<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <> SF_HD __half from_acc<__half>(float v) { return __float2half_rn(v); }
template <> SF_HD __nv_bfloat16 from_acc<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
#endif

// float and double overloads of the few math functions used (the C names are float-only or
// double-only, and std:: is not available in device code everywhere)
SF_HD float m_exp(float v) { return expf(v); }
SF_HD double m_exp(double v) { return exp(v); }
SF_HD float m_expm1(float v) { return expm1f(v); }
SF_HD double m_expm1(double v) { return expm1(v); }
SF_HD float m_log1p(float v) { return log1pf(v); }
SF_HD double m_log1p(double v) { return log1p(v); }
SF_HD float m_tanh(float v) { return tanhf(v); }
SF_HD double m_tanh(double v) { return tanh(v); }
SF_HD float m_abs(float v) { return fabsf(v); }
SF_HD double m_abs(double v) { return fabs(v); }

// dtype codes shared with the bindings in ops.cpp
enum DType { DT_FLOAT = 0, DT_HALF = 1, DT_BFLOAT16 = 2, DT_DOUBLE = 3 };
enum Act { A_LINEAR = 0, A_RELU, A_LRELU, A_TANH, A_SIGMOID, A_ELU, A_SELU, A_SOFTPLUS, A_SWISH };

template <typename A> SF_HD A act_fwd(int act, A x, A alpha) {
  const A one = 1;
  switch (act) {
    case A_RELU: return x > 0 ? x : A(0);
    case A_LRELU: return x > 0 ? x : x * alpha;
    case A_TANH: return m_tanh(x);
    case A_SIGMOID: return one / (one + m_exp(-x));
    case A_ELU: return x > 0 ? x : m_expm1(x);
    case A_SELU: return A(1.0507009873554805) * (x > 0 ? x : A(1.6732632423543772) * m_expm1(x));
    case A_SOFTPLUS: return x > 20 ? x : m_log1p(m_exp(x));  // torch's softplus threshold
    case A_SWISH: return x / (one + m_exp(-x));
    default: return x;
  }
}

// d act(x) / dx
template <typename A> SF_HD A act_grad(int act, A x, A alpha) {
  const A one = 1;
  switch (act) {
    case A_RELU: return x > 0 ? one : A(0);
    case A_LRELU: return x > 0 ? one : alpha;
    case A_TANH: { A t = m_tanh(x); return one - t * t; }
    case A_SIGMOID: { A s = one / (one + m_exp(-x)); return s * (one - s); }
    case A_ELU: return x > 0 ? one : m_exp(x);
    case A_SELU: return A(1.0507009873554805) * (x > 0 ? one : A(1.6732632423543772) * m_exp(x));
    case A_SOFTPLUS: return x > 20 ? one : one / (one + m_exp(-x));
    case A_SWISH: { A s = one / (one + m_exp(-x)); return s + x * s * (one - s); }
    default: return one;
  }
}

template <typename A> SF_HD A clamp_abs(A v, A clamp) {
  return clamp >= 0 ? (v < -clamp ? -clamp : (v > clamp ? clamp : v)) : v;
}

// ---- bias_act: y = clamp(act(x + b) * gain). Any dense layout: the bias index of the element at
// memory offset i is (i / stride_dim) % size_dim.
template <typename T, typename I>
SF_HD void bias_act_forward_element(I i, const T* x, const T* b, T* y, I stride_dim, I size_dim, int act,
                                    double alpha, double gain, double clamp) {
  typedef acc_t<T> A;
  A v = to_acc(x[i]);
  if (b) v += to_acc(b[(i / stride_dim) % size_dim]);
  y[i] = from_acc<T>(clamp_abs<A>(act_fwd<A>(act, v, A(alpha)) * A(gain), A(clamp)));
}

// dx = dy * gain * act'(x + b), zero where the clamp was active
template <typename T, typename I>
SF_HD void bias_act_backward_element(I i, const T* dy, const T* x, const T* b, T* dx, I stride_dim, I size_dim,
                                     int act, double alpha, double gain, double clamp) {
  typedef acc_t<T> A;
  A v = to_acc(x[i]);
  if (b) v += to_acc(b[(i / stride_dim) % size_dim]);
  A g = to_acc(dy[i]) * A(gain) * act_grad<A>(act, v, A(alpha));
  if (clamp >= 0 && m_abs(act_fwd<A>(act, v, A(alpha)) * A(gain)) >= A(clamp)) g = 0;
  dx[i] = from_acc<T>(g);
}

// ---- upfirdn2d: x [NC, H, W] contiguous, g [fh, fw] a correlation filter (the caller flips it
// for a true convolution and folds the gain in). Output pixel (oy, ox) of the up-sampled, padded,
// filtered and down-sampled signal. Only the taps that land on a real (not inserted-zero) input
// sample are visited: along y they are ky = ky0, ky0 + up, ... with ky0 = (py0 - oy*down) mod up.
SF_HD int pos_mod(int a, int m) { int r = a % m; return r < 0 ? r + m : r; }

template <typename T, typename I>
SF_HD void upfirdn2d_element(I i, const T* x, const float* g, T* y, int h, int w, int oh, int ow, int fh, int fw,
                             int upx, int upy, int downx, int downy, int px0, int py0) {
  const int ox = (int)(i % (I)ow);
  const int oy = (int)((i / (I)ow) % (I)oh);
  const I c = i / ((I)ow * (I)oh);
  const T* xc = x + c * (I)h * (I)w;
  const int by = oy * downy - py0, bx = ox * downx - px0;  // up-sampled coordinate of tap 0
  acc_t<T> acc = 0;
  for (int ky = pos_mod(-by, upy); ky < fh; ky += upy) {
    const int Y = by + ky;  // a multiple of upy
    if (Y < 0) continue;
    const int iy = Y / upy;
    if (iy >= h) break;
    for (int kx = pos_mod(-bx, upx); kx < fw; kx += upx) {
      const int X = bx + kx;
      if (X < 0) continue;
      const int ix = X / upx;
      if (ix >= w) break;
      acc += g[ky * fw + kx] * to_acc(xc[(I)iy * (I)w + ix]);
    }
  }
  y[i] = from_acc<T>(acc);
}

// ---- modulated-convolution epilogue, in place on the convolution's output y [N, C, H, W]
// (contiguous, or channels_last when cl):
//   y = clamp(act(y * d[n, c] + noise[n or 0, h, w] + bias[c]) * gain)
// d (demodulation coefficients), noise and bias are float32 and optional (null).
template <typename T, typename I>
SF_HD void modconv_epilogue_element(I i, T* y, const float* d, const float* noise, const float* bias, I C, I HW,
                                    bool cl, bool noise_per_sample, int act, double alpha, double gain, double clamp) {
  I n, c, p;
  if (cl) {
    c = i % C;
    const I q = i / C;
    p = q % HW;
    n = q / HW;
  } else {
    p = i % HW;
    const I q = i / HW;
    c = q % C;
    n = q / C;
  }
  typedef acc_t<T> A;
  A v = to_acc(y[i]);
  if (d) v *= d[n * C + c];
  if (noise) v += noise[(noise_per_sample ? n * HW : (I)0) + p];
  if (bias) v += bias[c];
  y[i] = from_acc<T>(clamp_abs<A>(act_fwd<A>(act, v, A(alpha)) * A(gain), A(clamp)));
}
