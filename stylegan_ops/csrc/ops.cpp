// PyTorch bindings of the kernels in bias_act.cu and upfirdn2d.cu (compiled as one extension).
#include <torch/extension.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime.h>

cudaError_t launch_bias_act_forward(int dtype, const void* x, const void* b, void* y, int64_t n, int64_t stride_dim,
                                    int64_t size_dim, int act, float alpha, float gain, float clamp,
                                    cudaStream_t stream);
cudaError_t launch_bias_act_backward(int dtype, const void* dy, const void* x, const void* b, void* dx, int64_t n,
                                     int64_t stride_dim, int64_t size_dim, int act, float alpha, float gain,
                                     float clamp, cudaStream_t stream);
cudaError_t launch_upfirdn2d(int dtype, const void* x, const float* g, void* y, int64_t nc, int h, int w, int oh,
                             int ow, int fh, int fw, int upx, int upy, int downx, int downy, int px0, int py0,
                             cudaStream_t stream);

static int dtype_code(const torch::Tensor& t) {
  switch (t.scalar_type()) {
    case torch::kFloat: return 0;
    case torch::kHalf: return 1;
    case torch::kBFloat16: return 2;
    case torch::kDouble: return 3;
    default: TORCH_CHECK(false, "synthface ops: unsupported dtype ", t.scalar_type());
  }
  return -1;
}

static void check(cudaError_t e, const char* what) {
  TORCH_CHECK(e == cudaSuccess, "synthface ops: ", what, " failed: ", cudaGetErrorString(e));
}

// x dense (any layout); b: [x.size(dim)] or empty.
torch::Tensor bias_act_forward(torch::Tensor x, torch::Tensor b, int64_t dim, int64_t act, double alpha, double gain,
                               double clamp) {
  TORCH_CHECK(x.is_cuda(), "x must be a CUDA tensor");
  TORCH_CHECK(x.is_non_overlapping_and_dense(), "x must be dense");
  const at::cuda::CUDAGuard guard(x.device());
  torch::Tensor y = torch::empty_like(x);
  const void* bp = nullptr;
  if (b.numel()) {
    TORCH_CHECK(b.is_cuda() && b.dim() == 1 && b.size(0) == x.size(dim) && b.scalar_type() == x.scalar_type(),
                "bias must be a 1-D CUDA tensor of x's dtype with x.size(dim) entries");
    b = b.contiguous();
    bp = b.data_ptr();
  }
  check(launch_bias_act_forward(dtype_code(x), x.data_ptr(), bp, y.data_ptr(), x.numel(), x.stride(dim),
                                x.size(dim), (int)act, (float)alpha, (float)gain, (float)clamp,
                                c10::cuda::getCurrentCUDAStream()),
        "bias_act forward");
  return y;
}

torch::Tensor bias_act_backward(torch::Tensor dy, torch::Tensor x, torch::Tensor b, int64_t dim, int64_t act,
                                double alpha, double gain, double clamp) {
  TORCH_CHECK(x.is_non_overlapping_and_dense() && dy.strides() == x.strides(), "dy and x must share a dense layout");
  const at::cuda::CUDAGuard guard(x.device());
  torch::Tensor dx = torch::empty_like(x);
  const void* bp = nullptr;
  if (b.numel()) {
    b = b.contiguous();
    bp = b.data_ptr();
  }
  check(launch_bias_act_backward(dtype_code(x), dy.data_ptr(), x.data_ptr(), bp, dx.data_ptr(), x.numel(),
                                 x.stride(dim), x.size(dim), (int)act, (float)alpha, (float)gain, (float)clamp,
                                 c10::cuda::getCurrentCUDAStream()),
        "bias_act backward");
  return dx;
}

// x: [N, C, H, W]; g: [fh, fw] float32 (correlation filter, gain folded in).
torch::Tensor upfirdn2d(torch::Tensor x, torch::Tensor g, int64_t upx, int64_t upy, int64_t downx, int64_t downy,
                        int64_t px0, int64_t px1, int64_t py0, int64_t py1) {
  TORCH_CHECK(x.is_cuda() && x.dim() == 4, "x must be a 4-D CUDA tensor");
  TORCH_CHECK(g.is_cuda() && g.dim() == 2 && g.scalar_type() == torch::kFloat, "g must be a 2-D float32 CUDA tensor");
  const at::cuda::CUDAGuard guard(x.device());
  auto fmt = x.suggest_memory_format();
  x = x.contiguous();
  g = g.contiguous();
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  const int64_t fh = g.size(0), fw = g.size(1);
  const int64_t oh = (h * upy + py0 + py1 - fh) / downy + 1;
  const int64_t ow = (w * upx + px0 + px1 - fw) / downx + 1;
  TORCH_CHECK(oh >= 1 && ow >= 1, "upfirdn2d: the output would be empty");
  torch::Tensor y = torch::empty({n, c, oh, ow}, x.options());
  check(launch_upfirdn2d(dtype_code(x), x.data_ptr(), g.data_ptr<float>(), y.data_ptr(), n * c, (int)h, (int)w,
                         (int)oh, (int)ow, (int)fh, (int)fw, (int)upx, (int)upy, (int)downx, (int)downy, (int)px0,
                         (int)py0, c10::cuda::getCurrentCUDAStream()),
        "upfirdn2d");
  return fmt == at::MemoryFormat::ChannelsLast ? y.contiguous(at::MemoryFormat::ChannelsLast) : y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("bias_act_forward", &bias_act_forward);
  m.def("bias_act_backward", &bias_act_backward);
  m.def("upfirdn2d", &upfirdn2d);
}
