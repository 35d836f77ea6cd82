// PyTorch bindings of the kernels in *.cu, compiled as one extension. Deliberately free of CUDA
// headers (the stream arrives from Python as an integer, errors as int codes), so that the CPU
// test suite can compile and link this file against a CPU-only torch. host_twin.cpp includes it
// with SF_HOST_TWIN defined to bind the same functions to CPU loops over the same maths.
#include <torch/extension.h>
#include <c10/core/DeviceGuard.h>

#ifdef SF_HOST_TWIN
#define SF_ON_DEVICE(t) (t).is_cpu()
#define SF_DEVICE_NAME "CPU"
#else
#define SF_ON_DEVICE(t) (t).is_cuda()
#define SF_DEVICE_NAME "CUDA"
#endif

int launch_bias_act_forward(int dtype, const void* x, const void* b, void* y, int64_t n, int64_t stride_dim,
                            int64_t size_dim, int act, double alpha, double gain, double clamp, void* stream);
int launch_bias_act_backward(int dtype, const void* dy, const void* x, const void* b, void* dx, int64_t n,
                             int64_t stride_dim, int64_t size_dim, int act, double alpha, double gain, double clamp,
                             void* stream);
int launch_upfirdn2d(int dtype, const void* x, const float* g, void* y, int64_t nc, int h, int w, int oh, int ow,
                     int fh, int fw, int upx, int upy, int downx, int downy, int px0, int py0, void* stream);
int launch_modconv_epilogue(int dtype, void* y, const float* d, const float* noise, const float* bias, int64_t n,
                            int64_t c, int64_t hw, bool cl, bool noise_per_sample, int act, double alpha, double gain,
                            double clamp, void* stream);
extern "C" const char* synthface_cuda_error_string(int code);

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

static void check(int code, const char* what) {
  TORCH_CHECK(code == 0, "synthface ops: ", what, " failed: ", synthface_cuda_error_string(code));
}

static void* as_stream(int64_t stream) { return reinterpret_cast<void*>(static_cast<intptr_t>(stream)); }

static const float* optional_f32(const torch::Tensor& t, const torch::Tensor& like, int64_t numel, const char* name) {
  if (!t.numel()) return nullptr;
  TORCH_CHECK(t.device() == like.device() && t.scalar_type() == torch::kFloat && t.is_contiguous() &&
                  t.numel() == numel,
              name, " must be a contiguous float32 tensor on x's device with ", numel, " entries");
  return t.data_ptr<float>();
}

// x dense (any layout); b: [x.size(dim)] or empty.
torch::Tensor bias_act_forward(torch::Tensor x, torch::Tensor b, int64_t dim, int64_t act, double alpha, double gain,
                               double clamp, int64_t stream) {
  TORCH_CHECK(SF_ON_DEVICE(x), "x must be a " SF_DEVICE_NAME " tensor");
  TORCH_CHECK(x.is_non_overlapping_and_dense(), "x must be dense");
  const c10::DeviceGuard guard(x.device());
  torch::Tensor y = torch::empty_like(x);
  const void* bp = nullptr;
  if (b.numel()) {
    TORCH_CHECK(b.device() == x.device() && b.dim() == 1 && b.size(0) == x.size(dim) &&
                    b.scalar_type() == x.scalar_type(),
                "bias must be a 1-D tensor on x's device, of x's dtype, with x.size(dim) entries");
    b = b.contiguous();
    bp = b.data_ptr();
  }
  check(launch_bias_act_forward(dtype_code(x), x.data_ptr(), bp, y.data_ptr(), x.numel(), x.stride(dim), x.size(dim),
                                (int)act, alpha, gain, clamp, as_stream(stream)),
        "bias_act forward");
  return y;
}

torch::Tensor bias_act_backward(torch::Tensor dy, torch::Tensor x, torch::Tensor b, int64_t dim, int64_t act,
                                double alpha, double gain, double clamp, int64_t stream) {
  TORCH_CHECK(SF_ON_DEVICE(x) && dy.device() == x.device(), "dy and x must be " SF_DEVICE_NAME " tensors on one device");
  TORCH_CHECK(x.is_non_overlapping_and_dense() && dy.strides() == x.strides(), "dy and x must share a dense layout");
  TORCH_CHECK(dy.scalar_type() == x.scalar_type(), "dy and x must share a dtype");
  const c10::DeviceGuard guard(x.device());
  torch::Tensor dx = torch::empty_like(x);
  const void* bp = nullptr;
  if (b.numel()) {
    b = b.contiguous();
    bp = b.data_ptr();
  }
  check(launch_bias_act_backward(dtype_code(x), dy.data_ptr(), x.data_ptr(), bp, dx.data_ptr(), x.numel(),
                                 x.stride(dim), x.size(dim), (int)act, alpha, gain, clamp,
                                 as_stream(stream)),
        "bias_act backward");
  return dx;
}

// x: [N, C, H, W]; g: [fh, fw] float32 (correlation filter, gain folded in).
torch::Tensor upfirdn2d(torch::Tensor x, torch::Tensor g, int64_t upx, int64_t upy, int64_t downx, int64_t downy,
                        int64_t px0, int64_t px1, int64_t py0, int64_t py1, int64_t stream) {
  TORCH_CHECK(SF_ON_DEVICE(x) && x.dim() == 4, "x must be a 4-D " SF_DEVICE_NAME " tensor");
  TORCH_CHECK(g.device() == x.device() && g.dim() == 2 && g.scalar_type() == torch::kFloat,
              "g must be a 2-D float32 tensor on x's device");
  const c10::DeviceGuard guard(x.device());
  auto fmt = x.suggest_memory_format();
  x = x.contiguous();
  g = g.contiguous();
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  const int64_t fh = g.size(0), fw = g.size(1);
  const int64_t oh = (h * upy + py0 + py1 - fh) / downy + 1;
  const int64_t ow = (w * upx + px0 + px1 - fw) / downx + 1;
  TORCH_CHECK(h * upy + py0 + py1 >= fh && w * upx + px0 + px1 >= fw, "upfirdn2d: the output would be empty");
  torch::Tensor y = torch::empty({n, c, oh, ow}, x.options());
  check(launch_upfirdn2d(dtype_code(x), x.data_ptr(), g.data_ptr<float>(), y.data_ptr(), n * c, (int)h, (int)w,
                         (int)oh, (int)ow, (int)fh, (int)fw, (int)upx, (int)upy, (int)downx, (int)downy, (int)px0,
                         (int)py0, as_stream(stream)),
        "upfirdn2d");
  return fmt == at::MemoryFormat::ChannelsLast ? y.contiguous(at::MemoryFormat::ChannelsLast) : y;
}

// In place on y [N, C, H, W] (contiguous or channels_last): y = clamp(act(y*d + noise + bias) * gain).
// d: [N, C] or empty; noise: [N, H*W] or [H*W] or empty; bias: [C] or empty (all float32).
torch::Tensor modconv_epilogue(torch::Tensor y, torch::Tensor d, torch::Tensor noise, torch::Tensor bias, int64_t act,
                               double alpha, double gain, double clamp, int64_t stream) {
  TORCH_CHECK(SF_ON_DEVICE(y) && y.dim() == 4, "y must be a 4-D " SF_DEVICE_NAME " tensor");
  const bool cl = !y.is_contiguous() && y.is_contiguous(at::MemoryFormat::ChannelsLast);
  TORCH_CHECK(cl || y.is_contiguous(), "y must be contiguous or channels_last");
  const c10::DeviceGuard guard(y.device());
  const int64_t n = y.size(0), c = y.size(1), hw = y.size(2) * y.size(3);
  const bool per_sample = noise.numel() == n * hw && n > 1;
  TORCH_CHECK(!noise.numel() || noise.numel() == hw || per_sample, "noise must hold H*W or N*H*W values");
  check(launch_modconv_epilogue(dtype_code(y), y.data_ptr(), optional_f32(d, y, n * c, "d"),
                                optional_f32(noise, y, noise.numel(), "noise"), optional_f32(bias, y, c, "bias"), n, c,
                                hw, cl, per_sample, (int)act, alpha, gain, clamp,
                                as_stream(stream)),
        "modconv epilogue");
  return y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("bias_act_forward", &bias_act_forward);
  m.def("bias_act_backward", &bias_act_backward);
  m.def("upfirdn2d", &upfirdn2d);
  m.def("modconv_epilogue", &modconv_epilogue);
}
