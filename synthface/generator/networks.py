"""StyleGAN2 generator (Karras et al., CVPR 2020) in the layout of NVIDIA's PyTorch releases.

Parameter and buffer names and shapes follow the official checkpoints exactly, so a
checkpoint's tensors load by name with strict checks. The maths is described in
shared/docs/stylegan2-reference.md; the operators live in `stylegan_ops`.
"""

from __future__ import annotations

import copy
import math
from typing import Optional, Sequence

import torch
from torch import nn

import stylegan_ops as ops

ARCHITECTURES = ("orig", "skip", "resnet")
CPU_CHANNELS_LAST = True
NOISE_MODES = ("const", "random", "none")


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


class FullyConnectedLayer(nn.Module):
    """Linear layer with equalised learning rate: runtime weight = stored * lr_mult / sqrt(in)."""

    def __init__(self, in_features, out_features, bias=True, activation="linear", lr_multiplier=1.0, bias_init=0.0):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x):
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return ops.bias_act(x.matmul(w.t()), b, act=self.activation)


class Conv2dLayer(nn.Module):
    """Plain convolution with equalised learning rate (used by the resnet skip path)."""

    def __init__(self, in_channels, out_channels, kernel_size, bias=True, activation="linear", up=1, down=1,
                 resample_filter=(1, 3, 3, 1), conv_clamp=None):
        super().__init__()
        self.activation, self.up, self.down, self.conv_clamp = activation, up, down, conv_clamp
        self.register_buffer("resample_filter", ops.setup_filter(list(resample_filter)))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.act_gain = ops.default_gain(activation)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels])) if bias else None

    def forward(self, x, gain=1.0):
        w = (self.weight * self.weight_gain).to(x.dtype)
        x = ops.conv2d_resample(x, w, f=self.resample_filter, up=self.up, down=self.down,
                                padding=self.padding, flip_weight=(self.up == 1))
        b = self.bias.to(x.dtype) if self.bias is not None else None
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return ops.bias_act(x, b, act=self.activation, gain=self.act_gain * gain, clamp=clamp)


class MappingNetwork(nn.Module):
    """z (and optional class label c) -> w, broadcast to num_ws copies, with truncation."""

    def __init__(self, z_dim, c_dim, w_dim, num_ws, num_layers=8, embed_features=None, layer_features=None,
                 activation="lrelu", lr_multiplier=0.01, w_avg_beta=0.995):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.num_layers, self.w_avg_beta = num_layers, w_avg_beta
        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for i in range(num_layers):
            setattr(self, f"fc{i}", FullyConnectedLayer(features[i], features[i + 1], activation=activation,
                                                       lr_multiplier=lr_multiplier))
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z, c=None, truncation_psi=1.0, truncation_cutoff=None, update_w_avg=False):
        x = None
        if self.z_dim > 0:
            _check_shape(z, [None, self.z_dim], "z")
            x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            if c is None:
                raise ValueError(f"this generator is conditional: pass c with shape [N, {self.c_dim}] (e.g. --class-idx)")
            _check_shape(c, [None, self.c_dim], "c")
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1) if x is not None else y
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        if update_w_avg and self.w_avg_beta is not None:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        return self.truncate(x, truncation_psi, truncation_cutoff)

    def truncate(self, ws, psi=1.0, cutoff=None):
        """w' = w_avg + psi (w - w_avg), for the first `cutoff` layers only if given."""
        if psi == 1:
            return ws
        if not hasattr(self, "w_avg"):
            raise ValueError("truncation needs w_avg, but this mapping network does not track it")
        if ws.ndim == 2 or cutoff is None:
            return self.w_avg.lerp(ws, psi)
        ws = ws.clone()
        ws[:, :cutoff] = self.w_avg.lerp(ws[:, :cutoff], psi)
        return ws


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution, optional 2x up-sampling, noise, bias, lrelu, clamp."""

    def __init__(self, in_channels, out_channels, w_dim, resolution, kernel_size=3, up=1, use_noise=True,
                 activation="lrelu", resample_filter=(1, 3, 3, 1), conv_clamp=None):
        super().__init__()
        self.resolution, self.up, self.use_noise = resolution, up, use_noise
        self.activation, self.conv_clamp = activation, conv_clamp
        self.register_buffer("resample_filter", ops.setup_filter(list(resample_filter)))
        self.padding = kernel_size // 2
        self.act_gain = ops.default_gain(activation)
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x, w, noise_mode="random", fused_modconv=None, gain=1.0, noise_generator=None):
        styles = self.affine(w)
        noise = None
        if self.use_noise and noise_mode == "random":
            noise = random_noise([x.shape[0], 1, self.resolution, self.resolution], x.device,
                                 noise_generator) * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return ops.modulated_conv2d_bias_act(x, self.weight, styles, self.bias, noise=noise, up=self.up,
                                             padding=self.padding, resample_filter=self.resample_filter,
                                             act=self.activation, gain=gain, clamp=clamp,
                                             flip_weight=(self.up == 1), fused=fused_modconv)


class ToRGBLayer(nn.Module):
    """Modulated 1x1 convolution to image channels, without demodulation."""

    def __init__(self, in_channels, out_channels, w_dim, kernel_size=1, conv_clamp=None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)

    def forward(self, x, w, fused_modconv=None):
        styles = self.affine(w) * self.weight_gain
        return ops.modulated_torgb(x, self.weight, styles, self.bias, clamp=self.conv_clamp, fused=fused_modconv)


class SynthesisBlock(nn.Module):
    """One resolution: (const | conv0 up) -> conv1 -> (torgb), with orig/skip/resnet wiring."""

    def __init__(self, in_channels, out_channels, w_dim, resolution, img_channels, is_last, architecture="skip",
                 resample_filter=(1, 3, 3, 1), conv_clamp=None, use_fp16=False, fp16_channels_last=False,
                 **layer_kwargs):
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
        self.in_channels, self.w_dim, self.resolution = in_channels, w_dim, resolution
        self.img_channels, self.is_last, self.architecture = img_channels, is_last, architecture
        self.use_fp16 = use_fp16
        self.channels_last = use_fp16 and fp16_channels_last
        self.register_buffer("resample_filter", ops.setup_filter(list(resample_filter)))
        self.num_conv = 0
        self.num_torgb = 0
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, resolution=resolution, up=2,
                                        resample_filter=resample_filter, conv_clamp=conv_clamp, **layer_kwargs)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, resolution=resolution,
                                    resample_filter=resample_filter, conv_clamp=conv_clamp, **layer_kwargs)
        self.num_conv += 1
        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)
            self.num_torgb += 1
        if in_channels != 0 and architecture == "resnet":
            self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False, up=2,
                                    resample_filter=resample_filter)

    def forward(self, x, img, ws, force_fp32=False, fused_modconv=None, noise_mode="random", noise_generator=None):
        w_iter = iter(ws.unbind(dim=1))
        on_cuda = ws.device.type == "cuda"
        # fp16 only pays off (and is only well supported) on CUDA; elsewhere run fp32.
        dtype = torch.float16 if (self.use_fp16 and not force_fp32 and on_cuda) else torch.float32
        # channels_last: oneDNN's CPU convolutions run ~15-20% faster on NHWC activations.
        cl = (self.channels_last and dtype == torch.float16) or (not on_cuda and CPU_CHANNELS_LAST)
        memory_format = torch.channels_last if cl else torch.contiguous_format
        # The skip image too: oneDNN's depthwise FIR on a 3-channel NCHW image takes a slow path
        # (about 3x at batch 1, 9x at batch 8); the network returns it contiguous.
        img_format = torch.channels_last if (not on_cuda and CPU_CHANNELS_LAST) else torch.contiguous_format
        layer_kw = dict(fused_modconv=fused_modconv, noise_mode=noise_mode, noise_generator=noise_generator)
        if self.in_channels == 0:
            x = self.const.to(dtype=dtype).unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
            x = x.to(memory_format=memory_format)
            x = self.conv1(x, next(w_iter), **layer_kw)
        else:
            x = x.to(dtype=dtype, memory_format=memory_format)
            if self.architecture == "resnet":
                y = self.skip(x, gain=math.sqrt(0.5))
                x = self.conv0(x, next(w_iter), **layer_kw)
                x = self.conv1(x, next(w_iter), gain=math.sqrt(0.5), **layer_kw)
                x = y.add_(x)
            else:
                x = self.conv0(x, next(w_iter), **layer_kw)
                x = self.conv1(x, next(w_iter), **layer_kw)
        if img is not None:
            img = ops.upsample2d(img.contiguous(memory_format=img_format), self.resample_filter)
        if self.is_last or self.architecture == "skip":
            y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv)
            y = y.to(dtype=torch.float32, memory_format=img_format)
            img = img.add_(y) if img is not None else y
        return x, img


CPU_PRECISIONS = ("fp32", "bf16")


class SynthesisNetwork(nn.Module):
    """ws [N, num_ws, w_dim] -> image [N, C, R, R] in about [-1, 1]."""

    # "bf16": run under CPU autocast (oneDNN uses AMX / AVX512-BF16 where the CPU has them); set by
    # Generator.set_cpu_precision, not part of the weights. The image always comes back fp32.
    cpu_precision = "fp32"

    def __init__(self, w_dim, img_resolution, img_channels, channel_base=32768, channel_max=512, num_fp16_res=0,
                 **block_kwargs):
        super().__init__()
        if img_resolution < 4 or img_resolution & (img_resolution - 1):
            raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.img_resolution_log2 = int(math.log2(img_resolution))
        self.block_resolutions = [2**i for i in range(2, self.img_resolution_log2 + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)
        self.num_ws = 0
        for res in self.block_resolutions:
            block = SynthesisBlock(channels[res // 2] if res > 4 else 0, channels[res], w_dim=w_dim, resolution=res,
                                   img_channels=img_channels, is_last=(res == img_resolution),
                                   use_fp16=(res >= fp16_resolution), **block_kwargs)
            self.num_ws += block.num_conv
            if res == img_resolution:
                self.num_ws += block.num_torgb
            setattr(self, f"b{res}", block)

    def forward(self, ws, **block_kwargs):
        _check_shape(ws, [None, self.num_ws, self.w_dim], "ws")
        ws = ws.to(torch.float32)
        if self.cpu_precision == "bf16" and ws.device.type == "cpu":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return self._blocks(ws, **block_kwargs).float()
        return self._blocks(ws, **block_kwargs)

    def _blocks(self, ws, **block_kwargs):
        x = img = None
        w_idx = 0
        # A block's torgb shares its w with the next block's first conv.
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            x, img = block(x, img, ws.narrow(1, w_idx, block.num_conv + block.num_torgb), **block_kwargs)
            w_idx += block.num_conv
        return img.contiguous()


class Generator(nn.Module):
    """Mapping + synthesis. `init_kwargs` is the config needed to rebuild the network."""

    def __init__(self, z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs=None, synthesis_kwargs=None):
        super().__init__()
        mapping_kwargs = dict(mapping_kwargs or {})
        synthesis_kwargs = dict(synthesis_kwargs or {})
        self.init_kwargs = dict(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution,
                                img_channels=img_channels, mapping_kwargs=copy.deepcopy(mapping_kwargs),
                                synthesis_kwargs=copy.deepcopy(synthesis_kwargs))
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        # Same construction order as the official code: synthesis first, then mapping.
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                          **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs)

    def forward(self, z, c=None, truncation_psi=1.0, truncation_cutoff=None, noise_mode="const",
                force_fp32=False, fused_modconv=None, noise_generator=None):
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode, force_fp32=force_fp32, fused_modconv=fused_modconv,
                              noise_generator=noise_generator)

    def set_cpu_precision(self, precision: str) -> "Generator":
        """'fp32' (default) or 'bf16': the arithmetic of synthesis on CPU (CUDA runs the checkpoint's own
        fp16/fp32 split whatever this says). bf16 trades about 1e-1 of largest pixel error (on a [-1, 1]
        scale) for speed on CPUs with bf16 units; docs/benchmarks.md has the measured figures."""
        if precision not in CPU_PRECISIONS:
            raise ValueError(f"CPU precision must be one of {', '.join(CPU_PRECISIONS)}, got {precision!r}")
        self.synthesis.cpu_precision = precision
        return self

    def labels(self, class_idx: Optional[int], batch: int, device) -> Optional[torch.Tensor]:
        """One-hot class labels for conditional generators (None for unconditional ones)."""
        if self.c_dim == 0:
            if class_idx is not None:
                raise ValueError("this generator is unconditional: drop --class-idx")
            return None
        if class_idx is None:
            raise ValueError(f"this generator is conditional: pass --class-idx between 0 and {self.c_dim - 1}")
        if not 0 <= class_idx < self.c_dim:
            raise ValueError(f"--class-idx must be between 0 and {self.c_dim - 1}, got {class_idx}")
        c = torch.zeros([batch, self.c_dim], device=device)
        c[:, class_idx] = 1
        return c


class DiscriminatorBlock(nn.Module):
    """One resolution of the residual discriminator: (fromrgb) -> conv0 -> conv1 down, plus a
    1x1 down-sampling skip, summed with gain sqrt(1/2)."""

    def __init__(self, in_channels, tmp_channels, out_channels, resolution, img_channels,
                 resample_filter=(1, 3, 3, 1), conv_clamp=None):
        super().__init__()
        self.in_channels, self.resolution = in_channels, resolution
        if in_channels == 0:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, kernel_size=1, activation="lrelu",
                                       conv_clamp=conv_clamp)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, kernel_size=3, activation="lrelu", conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, kernel_size=3, activation="lrelu", down=2,
                                 resample_filter=resample_filter, conv_clamp=conv_clamp)
        self.skip = Conv2dLayer(tmp_channels, out_channels, kernel_size=1, bias=False, down=2,
                                resample_filter=resample_filter)

    def forward(self, x, img):
        if self.in_channels == 0:
            x = self.fromrgb(img)
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv0(x)
        x = self.conv1(x, gain=math.sqrt(0.5))
        return y + x


class MinibatchStdLayer(nn.Module):
    """Appends the across-group standard deviation of features, which lets D see a lack of
    diversity in a batch of fakes."""

    def __init__(self, group_size=4, num_channels=1):
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x):
        N, C, H, W = x.shape
        G = min(self.group_size, N) if self.group_size else N
        if N % G:
            G = math.gcd(N, G)
        F = self.num_channels
        y = x.reshape(G, -1, F, C // F, H, W)
        y = (y - y.mean(dim=0)).square().mean(dim=0).add(1e-8).sqrt()
        y = y.mean(dim=[2, 3, 4]).reshape(-1, F, 1, 1).repeat(G, 1, H, W)
        return torch.cat([x, y], dim=1)


class DiscriminatorEpilogue(nn.Module):
    def __init__(self, in_channels, resolution, mbstd_group_size=4, mbstd_num_channels=1, conv_clamp=None):
        super().__init__()
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels)
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, kernel_size=3, activation="lrelu",
                                conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * resolution**2, in_channels, activation="lrelu")
        self.out = FullyConnectedLayer(in_channels, 1)

    def forward(self, x):
        x = self.conv(self.mbstd(x))
        return self.out(self.fc(x.flatten(1)))


class Discriminator(nn.Module):
    """StyleGAN2's residual discriminator (unconditional), named like the official one
    (b{res}.fromrgb/conv0/conv1/skip, b4.mbstd/conv/fc/out)."""

    def __init__(self, img_resolution, img_channels=3, channel_base=32768, channel_max=512, mbstd_group_size=4,
                 conv_clamp=None):
        super().__init__()
        self.init_kwargs = dict(img_resolution=img_resolution, img_channels=img_channels, channel_base=channel_base,
                                channel_max=channel_max, mbstd_group_size=mbstd_group_size, conv_clamp=conv_clamp)
        self.img_resolution, self.img_channels = img_resolution, img_channels
        log2 = int(math.log2(img_resolution))
        self.block_resolutions = [2**i for i in range(log2, 2, -1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions + [4]}
        for res in self.block_resolutions:
            in_ch = channels[res] if res < img_resolution else 0
            setattr(self, f"b{res}", DiscriminatorBlock(in_ch, channels[res], channels[res // 2], res, img_channels,
                                                        conv_clamp=conv_clamp))
        self.b4 = DiscriminatorEpilogue(channels[4], 4, mbstd_group_size=mbstd_group_size, conv_clamp=conv_clamp)

    def forward(self, img):
        _check_shape(img, [None, self.img_channels, self.img_resolution, self.img_resolution], "img")
        x = None
        for res in self.block_resolutions:
            x = getattr(self, f"b{res}")(x, img)
        return self.b4(x)


def random_noise(shape, device, generator=None) -> torch.Tensor:
    """Gaussian noise; `generator` may be one torch.Generator or a list with one per sample,
    which makes 'random' noise reproducible per image whatever the batch size."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"got {len(generator)} noise generators for a batch of {shape[0]}")
        return torch.cat([torch.randn([1, *shape[1:]], generator=g, device=g.device).to(device) for g in generator])
    if generator is not None:
        return torch.randn(shape, generator=generator, device=generator.device).to(device)
    return torch.randn(shape, device=device)


def _check_shape(t: torch.Tensor, shape: Sequence[Optional[int]], name: str) -> None:
    if t.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, t.shape)):
        want = "[" + ", ".join("N" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"{name} has shape {list(t.shape)}, expected {want}")
