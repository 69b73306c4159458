"""Layers shared by the model families, built for CPU speed without changing the function.

`SharedMLP` is the per-point Linear → BatchNorm → activation block (a 1×1 convolution of the
reference code, as one channels-last matmul). In eval mode it folds BatchNorm into the Linear,
so a max-pool can run *before* the (monotonic) activation; in training, the last layer before
a max-pool fuses BatchNorm, activation and pooling (`_BatchNormActMax`). `chain_max` and
`map_chunks` run inference on cache-sized blocks so the widest activations never exist.

Three autograd functions give the same values as plain ops with cheaper CPU backward passes:
`cat_linear` (no input gradient for coordinate columns), `max_k` (amax over neighbours) and
`cloud_std` (a per-cloud standard deviation); tests compare each with the plain ops.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pointkd.models import ops
from pointkd.models.kernels import native

__all__ = ["SharedMLP", "cat_linear", "chain_max", "cloud_std", "map_chunks", "max_k"]


def _pre_activation(x, weight, bias, index, centre, sl: slice) -> Tensor:
    """Chunk `sl` of z (·, K, C): x itself, x·Wᵀ + b, or rows x[index] + centre (EdgeConv)."""
    if weight is not None:
        return F.linear(x[sl], weight, bias)
    if index is not None:
        rows = index[sl]
        z = x.index_select(0, rows.reshape(-1)).view(*rows.shape, x.shape[-1])
        return z.add_(centre[sl].unsqueeze(1))
    return x[sl]


def _gathered_backward(x, index, centre, top, alpha, offset, sparse, winner, zsum, tied,
                       dx, dc) -> None:
    """Backward of the gathered pool, z = x[index] + centre, without making z again.

    dz = alpha·z + offset + sparse·[selected] (see `_BatchNormActMax`) sums, per table row j
    and per group g, to
        dx_j = cnt_j·(alpha·x_j + offset) + alpha·Σ_{g,k: index=j} centre_g + selected terms
        dc_g = alpha·Σ_k z_gk + K·offset + sparse_g
    with cnt_j the times row j is a neighbour and Σ_k z_gk kept by forward. The selected
    terms go to the winning row of each (group, channel) that forward kept, except in groups
    with tied maxima, whose share (split evenly, as amax does) comes from their z, made again
    for those few groups only. Fills `dx` and `dc` (both empty) in place."""
    g, k = index.shape
    c = x.shape[1]
    if dc is not None:
        torch.addcmul(sparse + k * offset, zsum, alpha, out=dc)
    if dx is None:
        return
    if x.dtype == centre.dtype == torch.float32 and native.available():  # the same, in C++
        native.gathered_backward(dx, x, index, centre, alpha, offset, winner, tied, sparse)
    else:
        cnt = torch.bincount(index.reshape(-1), minlength=x.shape[0]).to(x.dtype).unsqueeze(1)
        torch.addcmul(offset, x, alpha, out=dx).mul_(cnt)
        scaled = centre * alpha
        for j in range(k):  # k row-scatters of (G, C): no (G, K, C) tensor
            dx.index_add_(0, index[:, j], scaled)
        lone = sparse.masked_fill(tied.unsqueeze(1), 0)
        flat = winner.mul(c).add_(torch.arange(c, device=x.device))
        dx.view(-1).index_add_(0, flat.view(-1), lone.view(-1))
    if bool(tied.any()):
        rows = tied.nonzero().squeeze(1)
        sub = index[rows]
        z = x.index_select(0, sub.reshape(-1)).view(*sub.shape, c) + centre[rows].unsqueeze(1)
        hit = (z == top[rows].unsqueeze(1)).to(x.dtype)
        share = hit * (sparse[rows] / hit.sum(1)).unsqueeze(1)
        dx.index_add_(0, sub.reshape(-1), share.view(-1, c))


class _BatchNormActMax(torch.autograd.Function):
    """Training-mode `act(BN(z)).amax(-2)` for z `(G, K, C)` without BN/act outputs.

    With the batch statistics fixed, BN + activation is a monotonic map per channel, so the
    max over K is the max (gain ≥ 0) or the min (gain < 0) of z itself. Backward uses the
    closed-form BatchNorm gradient, whose output gradient is non-zero only at the selected
    entries: dz = gain·(g·[selected] − mean(g) − ẑ·mean(g·ẑ)), an affine map of z plus a
    sparse term (ties share it, as in amax). Everything runs on cache-sized chunks of G.

    z is given, or made chunk by chunk from its inputs — z = x·Wᵀ + b (a Linear), or
    z = x[index] + centre (EdgeConv's gathered neighbours) — and made again in backward, so
    the widest tensor of the block and its gradient never exist: recomputing a chunk costs
    less than writing and re-reading full-size tensors."""

    @staticmethod
    def forward(ctx, x, weight, bias, index, centre, gamma, beta, running_mean, running_var,
                momentum, eps, slope):
        g, k = (index if index is not None else x).shape[:2]
        c = gamma.shape[0]
        rows = g * k
        if rows < 2:
            raise ValueError("BatchNorm needs more than one value per channel in training")
        step = max(1, ops.tile_elements(x.device) // (k * c))
        inputs = (x, weight, bias, index, centre)
        fresh = weight is not None or index is not None  # chunks are new tensors
        shift = _pre_activation(*inputs, slice(0, 1))[0, 0].clone()  # for a stable Var
        s1 = torch.zeros(c, dtype=torch.float64, device=x.device)
        s2 = torch.zeros_like(s1)
        top = x.new_empty(g, c)
        negative = bool((gamma < 0).any())  # gain sign = γ sign: those channels take the min
        low = x.new_empty(g, c) if negative else None
        # gathered z: remember which neighbour won each (group, channel), so that backward
        # need not make z again (see _gathered_backward)
        gathered = index is not None and x.is_cpu
        if gathered:
            zsum = x.new_empty(g, c)
            hit = x.new_empty(min(step, g), k, c)
            found = x.new_empty(g, 2, c)
            # (2, K): one matmul gives, per (group, channel), the number of neighbours at
            # the max and the sum of their positions, which is the winner when it is alone
            count_pos = torch.stack([torch.ones(k), torch.arange(k)]).to(x)
        use_native = (gathered and x.dtype == torch.float32 and centre.dtype == torch.float32
                      and native.available())
        if use_native:  # the loop below in one C++ pass
            top, winner, tied, zsum, s1, s2 = native.gathered_max(x, index, centre, gamma,
                                                                  shift)
        for s in range(0, 0 if use_native else g, step):
            sl = slice(s, s + step)
            zc = _pre_activation(*inputs, sl)
            if gathered:
                tc = zc.amax(1)
                if negative:
                    tc = torch.where(gamma >= 0, tc, zc.amin(1))
                top[sl] = tc
                # a float `out` is several times faster than a bool comparison result
                h = torch.eq(zc, tc.unsqueeze(1), out=hit[: zc.shape[0]])
                torch.matmul(count_pos, h, out=found[sl])  # (g, 2, C)
            else:
                top[sl] = zc.amax(1)
                if low is not None:
                    low[sl] = zc.amin(1)
            zc = zc.sub_(shift) if fresh else zc - shift
            s1 += zc.sum((0, 1))  # (as before, so that the statistics are bit for bit equal)
            if gathered:
                torch.add(zc.sum(1), shift, alpha=k, out=zsum[sl])
            s2 += zc.mul_(zc).sum((0, 1))
        if gathered and not use_native:
            tied = found[:, 0].gt(1.5).any(1)
            winner = index.gather(1, found[:, 1].long().clamp_max_(k - 1))  # tied: unused
        m1 = s1 / rows
        var = (s2 / rows - m1 * m1).clamp_min_(0).to(x.dtype)
        mean = (m1 + shift).to(x.dtype)
        invstd = torch.rsqrt(var + eps)
        if low is not None and not gathered:
            top = torch.where(gamma >= 0, top, low)
        pre = (top - mean) * (gamma * invstd) + beta
        if running_mean is not None:
            running_mean.lerp_(mean, momentum)
            running_var.lerp_(var * (rows / (rows - 1)), momentum)
        ctx.gathered = (winner, zsum, tied) if gathered else None
        ctx.save_for_backward(*inputs, top, pre, mean, invstd, gamma)
        ctx.slope, ctx.step, ctx.shape = slope, step, (g, k, c)
        return F.leaky_relu(pre, slope)

    @staticmethod
    def backward(ctx, grad):
        x, weight, bias, index, centre, top, pre, mean, invstd, gamma = ctx.saved_tensors
        inputs = (x, weight, bias, index, centre)
        g, k, c = ctx.shape
        # where(pre > 0, grad, grad·slope) in one pass instead of three
        g1 = torch.ops.aten.leaky_relu_backward(grad, pre, ctx.slope, False)
        d_beta = g1.sum(0)
        d_gamma = (g1 * (top - mean) * invstd).sum(0)
        gain = gamma * invstd
        alpha = -gain * invstd * d_gamma / (g * k)  # dz = alpha·z + offset + sparse(gain·g1)
        offset = -gain * d_beta / (g * k) - alpha * mean
        sparse = gain * g1
        need = ctx.needs_input_grad
        dx = dw = db = dc = None
        if need[0]:
            dx = torch.zeros_like(x) if index is not None and ctx.gathered is None else \
                torch.empty_like(x)
        if weight is not None:
            dw = torch.zeros_like(weight)
            db = torch.zeros_like(bias) if bias is not None else None
        if centre is not None and need[4]:
            dc = torch.empty_like(centre)
        if dx is None and dw is None and dc is None:
            return None, None, None, None, None, d_gamma, d_beta, *[None] * 5
        if ctx.gathered is not None:
            _gathered_backward(x, index, centre, top, alpha, offset, sparse, *ctx.gathered,
                               dx, dc)
            return dx, None, None, None, dc, d_gamma, d_beta, *[None] * 5
        for s in range(0, g, ctx.step):
            sl = slice(s, s + ctx.step)
            zc = _pre_activation(*inputs, sl)
            if weight is None and index is None:  # the gradient of z is the output
                dz = torch.addcmul(offset, zc, alpha, out=dx[sl])
            else:
                dz = torch.addcmul(offset, zc, alpha)
            hit = (zc == top[sl].unsqueeze(1)).to(x.dtype)
            dz.addcmul_(hit, (sparse[sl] / hit.sum(1).clamp_min_(1)).unsqueeze(1))
            if weight is not None:
                if dx is not None:
                    torch.matmul(dz, weight, out=dx[sl])
                dw.addmm_(dz.reshape(-1, c).t(), x[sl].reshape(-1, x.shape[-1]))
                if db is not None:
                    db += dz.sum((0, 1))
            elif index is not None:
                if dx is not None:
                    dx.index_add_(0, index[sl].reshape(-1), dz.reshape(-1, c))
                if dc is not None:
                    torch.sum(dz, 1, out=dc[sl])
        return dx, dw, db, None, dc, d_gamma, d_beta, *[None] * 5


class _CatLinear(torch.autograd.Function):
    """`F.linear(torch.cat(pieces, -1), weight, bias)` whose backward computes the input
    gradient only for the pieces that need one, each against its own slice of the weight.

    Autograd's Linear would compute the gradient of the whole concatenation, coordinates
    included, and the few extra columns also make that matmul's output width odd (67 rather
    than 64), which CPU BLAS runs ~1.5× slower. The weight gradient is Xᵀ·dY, transposed:
    for thin inputs (the 3 coordinates of an embedding) several times faster than dYᵀ·X.
    The forward is the same single matmul."""

    @staticmethod
    def forward(ctx, weight, bias, *pieces):
        x = torch.cat(pieces, dim=-1) if len(pieces) > 1 else pieces[0]
        # callers pass column slices of a wider weight; MKL runs a matmul against a strided
        # slice up to ~1.6x slower (measured on this CPU) than against a contiguous copy
        weight = weight.contiguous()
        ctx.save_for_backward(weight, x)
        ctx.widths = [p.shape[-1] for p in pieces]
        ctx.has_bias = bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        weight, x = ctx.saved_tensors
        need = ctx.needs_input_grad
        dy = grad.reshape(-1, grad.shape[-1])
        dw = torch.mm(x.reshape(-1, x.shape[-1]).t(), dy).t().contiguous() if need[0] else None
        db = dy.sum(0) if ctx.has_bias and need[1] else None
        pieces, start = [], 0
        for i, width in enumerate(ctx.widths):
            pieces.append(torch.matmul(grad, weight[:, start:start + width].contiguous())
                          if need[2 + i] else None)
            start += width
        return dw, db, *pieces


def cat_linear(pieces: list[Tensor], weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """`F.linear(torch.cat(pieces, -1), weight, bias)`, with a cheaper backward on CPU
    (`_CatLinear`): no gradient for pieces that need none. Same values, forward and backward,
    within float rounding. Under autocast, off the CPU or when exporting, the plain ops."""
    if (torch.is_grad_enabled() and weight.requires_grad and weight.is_cpu
            and not torch.is_autocast_enabled("cpu") and not ops._tracing()):
        return _CatLinear.apply(weight, bias, *pieces)
    return F.linear(torch.cat(pieces, dim=-1) if len(pieces) > 1 else pieces[0], weight, bias)


class _MaxK(torch.autograd.Function):
    """`x.amax(-2)` with amax's gradient (split evenly among tied maxima), computed in three
    passes: a float-valued comparison (`out=`), its sum, one in-place multiply. Autograd's
    AmaxBackward converts the comparison to int64 and to float on the way (~2× slower on CPU
    for the (B, M, K, C) tensors of PointMLP); the values are the same floats."""

    @staticmethod
    def forward(ctx, x):
        out = x.amax(-2)
        ctx.save_for_backward(x, out)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, out = ctx.saved_tensors
        hit = torch.eq(x, out.unsqueeze(-2), out=torch.empty_like(x))
        return hit.mul_((grad / hit.sum(-2)).unsqueeze(-2))


def max_k(x: Tensor) -> Tensor:
    """`x.amax(-2)` (the max over neighbours), with a cheaper backward (`_MaxK`) when a
    gradient is wanted on CPU; otherwise the plain op."""
    if torch.is_grad_enabled() and x.requires_grad and x.is_cpu and not ops._tracing():
        return _MaxK.apply(x)
    return x.amax(-2)


class _CloudStd(torch.autograd.Function):
    """`x.std(dim=-1)` (unbiased) of a `(B, L)` tensor by two passes (mean, then squared
    deviations): torch.std's single-pass Welford kernel runs ~8× slower on CPU. Same value
    within float rounding (both sums are pairwise); backward is StdBackward's formula,
    (x − mean)·grad / ((L − 1)·std), without keeping the deviations."""

    @staticmethod
    def forward(ctx, x):
        mean = x.mean(-1, keepdim=True)
        std = (x - mean).square_().sum(-1).div_(x.shape[-1] - 1).sqrt_()
        ctx.save_for_backward(x, mean, std)
        return std

    @staticmethod
    def backward(ctx, grad):
        x, mean, std = ctx.saved_tensors
        scale = grad / (std * (x.shape[-1] - 1))
        return (x - mean).mul_(scale.unsqueeze(-1))


def cloud_std(x: Tensor) -> Tensor:
    """Unbiased standard deviation over the last dim of `(B, L)` (`_CloudStd` on CPU)."""
    if x.is_cpu and x.dtype == torch.float32 and not ops._tracing():
        return _CloudStd.apply(x)
    return x.std(dim=-1)


class SharedMLP(nn.Module):
    """Linear → BatchNorm1d → ReLU/LeakyReLU on the last dim of any `(..., c_in)` tensor.

    Equivalent to the 1×1 Conv1d/Conv2d + BatchNorm blocks of the reference code (same
    parameters), but as one matmul over a channels-last `(rows, C)` matrix. In eval mode the
    BatchNorm is folded into the Linear (`weight_bias`); `pool`/`forward_max` then take the
    max before the activation (exact: the activation is monotonic), and in training they use
    the fused `_BatchNormActMax`."""

    def __init__(self, c_in: int, c_out: int, bias: bool = True, slope: float = 0.0) -> None:
        super().__init__()
        self.fc = nn.Linear(c_in, c_out, bias=bias)
        self.bn = nn.BatchNorm1d(c_out)
        self.slope = slope

    def folded(self) -> bool:
        return not self.training and self.bn.running_mean is not None

    def weight_bias(self) -> tuple[Tensor, Tensor | None]:
        """The Linear's parameters, with the BatchNorm folded in when in eval mode.

        Without autograd (inference) the folded pair is cached until a tensor changes
        (storage or version counter) or the module's mode is set (`train`): BatchNorm's
        kernel updates running statistics without bumping their version, which happens only
        in training mode. At batch 1 the ~7 folding ops per layer were a tenth of a
        student's forward."""
        if not self.folded():
            return self.fc.weight, self.fc.bias
        if torch.is_grad_enabled() or ops._tracing():  # gradients / a traced graph: fold here
            return self._fold()
        tensors = (self.fc.weight, self.fc.bias, self.bn.weight, self.bn.bias,
                   self.bn.running_mean, self.bn.running_var)
        key = (self.bn.eps, *((t.data_ptr(), t._version, t.dtype, t.device)
                              for t in tensors if t is not None))
        cached = self.__dict__.get("_folded")
        if cached is None or cached[0] != key:
            cached = (key, self._fold())
            self.__dict__["_folded"] = cached
        return cached[1]

    def train(self, mode: bool = True) -> SharedMLP:
        self.__dict__.pop("_folded", None)  # running statistics may change (weight_bias)
        return super().train(mode)

    def _fold(self) -> tuple[Tensor, Tensor]:
        bn = self.bn
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        bias = -bn.running_mean if self.fc.bias is None else self.fc.bias - bn.running_mean
        return self.fc.weight * scale.unsqueeze(1), bias * scale + bn.bias

    def activate(self, y: Tensor) -> Tensor:
        """In place: the activation (a ReLU when slope is 0)."""
        return F.relu_(y) if self.slope == 0 else F.leaky_relu_(y, self.slope)

    def finish(self, y: Tensor) -> Tensor:
        """BatchNorm (unless folded) + activation of a pre-activation made with `weight_bias`."""
        if self.folded():
            return self.activate(y)
        # activate the 2-D BatchNorm output, not a view of it: an in-place op on a view makes
        # autograd copy the whole tensor in backward
        return self.activate(self.bn(y.reshape(-1, y.shape[-1]))).view(y.shape)

    def _fused(self, x: Tensor, linear: bool = False, index: Tensor | None = None,
               centre: Tensor | None = None) -> Tensor:
        bn = self.bn
        if bn.training and bn.track_running_stats:
            bn.num_batches_tracked.add_(1)
            momentum = bn.momentum
            if momentum is None:  # cumulative moving average
                momentum = 1.0 / float(bn.num_batches_tracked)
            stats = (bn.running_mean, bn.running_var)
        else:  # batch statistics without running ones (track_running_stats=False)
            momentum, stats = 0.0, (None, None)
        lead = index.shape[:-1] if index is not None else x.shape[:-2]
        flat = x if index is not None else x.reshape(-1, *x.shape[-2:])
        if flat.dtype in (torch.float16, torch.bfloat16):  # as BatchNorm under autocast
            flat = flat.float()
        if centre is not None and centre.dtype in (torch.float16, torch.bfloat16):
            centre = centre.float()  # (and the C++ pool, which takes float32, still serves)
        w, b = (self.fc.weight, self.fc.bias) if linear else (None, None)
        out = _BatchNormActMax.apply(flat, w, b, index, centre, bn.weight, bn.bias, *stats,
                                     momentum, bn.eps, self.slope)
        return out.view(*lead, out.shape[-1])

    def fusable(self) -> bool:
        """The fused training path computes BatchNorm itself; SyncBatchNorm's cross-process
        statistics need the module's own forward."""
        return not isinstance(self.bn, nn.SyncBatchNorm)

    def pool(self, y: Tensor) -> Tensor:
        """`finish(y).amax(-2)` for a pre-activation `y (..., K, C)` made with `weight_bias`."""
        if self.folded():
            return self.activate(y.amax(-2))
        if not self.fusable():
            return self.finish(y).amax(-2)
        return self._fused(y, linear=False)

    def pool_gathered(self, table: Tensor, index: Tensor, centre: Tensor) -> Tensor:
        """`pool(table[index] + centre[:, None])` for a pre-activation table `(R, C)`, flat
        row indices `index (G, K)` and `centre (G, C)`, without the `(G, K, C)` tensor."""
        if self.folded() or not table.is_cpu or not self.fusable():
            z = table.index_select(0, index.reshape(-1)).view(*index.shape, table.shape[-1])
            return self.pool(z + centre.unsqueeze(1))
        return self._fused(table, index=index, centre=centre)

    def forward(self, x: Tensor) -> Tensor:
        if self.fc.in_features <= 8 and not self.folded():  # a point embedding: see cat_linear
            return self.finish(cat_linear([x], *self.weight_bias()))
        return self.finish(F.linear(x, *self.weight_bias()))

    def forward_max(self, x: Tensor) -> Tensor:
        """`self(x).amax(-2)`: max over the second-to-last dim (points or neighbours)."""
        if self.folded():
            return self.pool(F.linear(x, *self.weight_bias()))
        # recomputing the Linear chunk-wise pays on CPU (memory-bound); elsewhere, or under
        # autocast (backward would recompute in another precision), keep its output
        if x.is_cpu and not torch.is_autocast_enabled("cpu") and self.fusable():
            return self._fused(x, linear=True)
        return self.pool(F.linear(x, *self.weight_bias()))


def map_chunks(
    fn: Callable[[slice], Tensor], n: int, cost: int, device: torch.device | None = None
) -> Tensor:
    """`torch.cat([fn(s) for s in slices of range(n)])`, each slice costing ≤ ~1M elements.

    `cost` is the size of the widest intermediate per item. Inference paths use it to run a
    whole chain of layers on cache-sized blocks, so wide activations are never allocated."""
    step = max(1, 4 * ops.tile_elements(device or torch.device("cpu")) // max(cost, 1))
    if step >= n or ops._tracing():
        return fn(slice(None))
    return torch.cat([fn(slice(s, s + step)) for s in range(0, n, step)])


def chain_max(layers: list[SharedMLP] | nn.ModuleList, x: Tensor) -> Tensor:
    """`layers` applied to `x (..., K, C)`, then the max over K (the second-to-last dim).

    Training: the layers one after another, the last fused with the max (`pool`). Eval: the
    chain runs on cache-sized blocks of the leading dims (`map_chunks`)."""
    *hidden, last = layers
    if not last.folded():
        for layer in hidden:
            x = layer(x)
        return last.forward_max(x)
    k = x.shape[-2]
    groups = x.reshape(-1, k, x.shape[-1])
    width = k * max(layer.fc.out_features for layer in layers)

    def run(s: slice) -> Tensor:
        h = groups[s]
        for layer in hidden:
            h = layer(h)
        return last.forward_max(h)

    return map_chunks(run, groups.shape[0], width, x.device).view(*x.shape[:-2], -1)
