"""The palette networks of ``cnn`` and their training step.

A batch of small convolutional networks (one set of weights per image) maps each image's
thumbnail to a palette and a max-cost cap; the surrogate of the exact score, its closed-form
gradient, and the optimiser (Gauss-Newton steps for the palette, Adam for the rest) live here.
torch is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import math

import numpy as np

from cq.objective import Weights


class PaletteNets:
    """A batch of the tutorial's palette network, one independent set of weights per image.

    Per image: 3x3 convolutions with ReLU and 2x2 max-pooling on the image's thumbnail, a dense
    ReLU layer, then a linear head to ``3k`` colour values (0..255 units) and the log of the
    max-cost cap. The images' convolutions run as one grouped convolution and their dense layers
    as batched matrix products, so B networks cost one network's kernel launches.
    """

    def __init__(self, batch: int, k: int, config, thumbs, starts: np.ndarray, caps: np.ndarray, device):
        import torch

        self.k, self.batch = k, batch
        gen = torch.Generator().manual_seed(config.seed)
        self.convs, width = [], 3
        for out in config.channels:
            self.convs.append(self._uniform(gen, batch, (out, width, 3, 3), width * 9)
                              + self._uniform(gen, batch, (out,), width * 9))
            width = out
        side = config.input_size >> len(config.channels)
        flat = width * side * side
        self.dense = (self._uniform(gen, batch, (flat, config.hidden), flat)
                      + self._uniform(gen, batch, (config.hidden,), flat))
        self.thumbs = thumbs
        self.head_w = self._uniform(gen, batch, (config.hidden, 3 * k), 3.0)[0]
        self.head_b = torch.as_tensor(starts.reshape(batch, -1), dtype=torch.float32)
        self.log_cap = torch.as_tensor(np.log(np.maximum(caps, 1.0)), dtype=torch.float32)
        with torch.no_grad():  # the features' share of the start: about ``head_init`` colour units
            scale = config.head_init / self._features().norm(dim=1).clamp_min(1e-6)
            self.head_w *= scale[:, None, None]
        tensors = [*(t for pair in self.convs for t in pair), *self.dense,
                   self.head_w, self.head_b, self.log_cap, self.thumbs]
        moved = [t.to(device).requires_grad_(t is not self.thumbs) for t in tensors]
        n = 2 * len(self.convs)
        self.convs = [tuple(moved[i:i + 2]) for i in range(0, n, 2)]
        self.dense = tuple(moved[n:n + 2])
        self.head_w, self.head_b, self.log_cap, self.thumbs = moved[n + 2:]

    @staticmethod
    def _uniform(gen, batch: int, shape: tuple, fan_in: int):
        """One PyTorch-default (Kaiming-uniform) draw, the same for every image of the batch, as a 1-tuple."""
        import torch

        bound = 1.0 / math.sqrt(fan_in)
        one = (torch.rand(shape, generator=gen) * 2.0 - 1.0) * bound
        return (one.expand(batch, *shape).clone(),)

    def head_bias(self) -> list:
        return [self.head_b]

    def cap(self) -> list:
        return [self.log_cap]

    def body(self) -> list:
        return [*(t for pair in self.convs for t in pair), *self.dense, self.head_w]

    def _features(self, rows=None):
        """(B, hidden) features of every image's thumbnail (of the images ``rows`` only, if given)."""
        import torch
        import torch.nn.functional as F

        take = (lambda t: t) if rows is None else (lambda t: t[rows])
        thumbs = take(self.thumbs)
        b = len(thumbs)
        h = thumbs.reshape(1, -1, *thumbs.shape[-2:])
        for weight, bias in self.convs:
            weight = take(weight)
            h = F.conv2d(h, weight.reshape(-1, *weight.shape[2:]), take(bias).reshape(-1),
                         padding=1, groups=b)
            h = F.max_pool2d(F.relu(h), 2)
        h = h.reshape(b, 1, -1)
        weight, bias = (take(t) for t in self.dense)
        return F.relu(torch.baddbmm(bias.unsqueeze(1), h, weight)).squeeze(1)

    def __call__(self, rows=None):
        """Every image's raw palette (B, k, 3) and max-cost cap (B,); or those of the images ``rows``.

        Taking rows keeps the gradient flowing to the full weights: images that stopped early
        cost nothing more in a batch.
        """
        import torch

        take = (lambda t: t) if rows is None else (lambda t: t[rows])
        features = self._features(rows).unsqueeze(1)
        out = torch.baddbmm(take(self.head_b).unsqueeze(1), features, take(self.head_w))
        return out.reshape(len(out), self.k, 3), take(self.log_cap).exp()


class Optimiser:
    """Preconditioned steps for the output bias, Adam for every other weight.

    The surrogate's gradient for palette colour j is about ``2 (w_mse/3) m_j (c_j - t_j)``, where
    ``m_j`` is the pixel share it softly holds and ``t_j`` its best position for that share. Divided
    by ``2 (w_mse/3) m_j`` (a diagonal Gauss-Newton step), a step of ``lr`` moves the colour that
    fraction of the way to ``t_j``: at ``lr = 1`` and low temperature, exactly a Lloyd step on the
    score. Adam (written out: ``torch.optim`` costs 1.7 s of imports per process) trains the
    convolutions, dense layers, head weights and the cap.
    """

    def __init__(self, net, config, weights: Weights):
        import torch

        self.net, self.config, self.curvature = net, config, 2.0 * weights.pixel_mse
        self.groups = [(net.body(), config.lr_body), (net.cap(), config.lr_cap)]
        self.moments = [[(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
                        for params, _ in self.groups]
        self.t = 0

    def step(self, share, lr: float, decay: float) -> None:
        """One step from the gradients in place; ``share`` (B, k) is each colour's soft pixel share,
        ``decay`` the schedule's factor on the Adam rates."""
        import torch

        self.t += 1
        with torch.no_grad():
            bias = self.net.head_b
            scale = (self.curvature * share).clamp_min(1e-6).repeat_interleave(3, dim=1)
            bias -= lr * bias.grad / scale
            bias.grad = None
            for (params, rate), moments in zip(self.groups, self.moments):
                for p, (m, v) in zip(params, moments):
                    if p.grad is None or rate == 0:
                        continue
                    m.mul_(0.9).add_(p.grad, alpha=0.1)
                    v.mul_(0.999).addcmul_(p.grad, p.grad, value=0.001)
                    denom = (v / (1 - 0.999 ** self.t)).sqrt_().add_(1e-8)
                    p.addcdiv_(m, denom, value=-rate * decay / (1 - 0.9 ** self.t))
                    p.grad = None


def capped(palette, cap):
    """Clamp the palette to the cube (gradient passed straight through) and pull every colour
    farther than ``cap`` from its nearest vertex in to that radius; also returns the costs."""
    import torch

    c = palette + (palette.clamp(0.0, 255.0) - palette).detach()
    vertex = (c.detach() > 127.5).to(c.dtype) * 255.0
    out = c - vertex
    radius = (out * out).sum(-1).add(1e-6).sqrt()
    scale = torch.clamp(cap.unsqueeze(-1) / radius, max=1.0)
    return vertex + out * scale.unsqueeze(-1), radius * scale


def backward(net, colors, mass, weights: Weights, tau: float, rows=None):
    """Forward the networks, and back-propagate the surrogate's gradient into their weights.

    The gradient with respect to the capped palette and its costs has a closed form
    (``surrogate_terms``), so autograd only runs through the networks and the cap projection,
    not through the (n, k) soft assignment: several times faster than ``surrogate_loss``'s
    backward, with the same result. ``rows`` selects the images to train (all if None); ``colors``
    and ``mass`` are theirs. Returns each of their colours' soft pixel share (rows, k).
    """
    import torch

    palette, cap = net(rows)
    inside, cost = capped(palette, cap)
    with torch.no_grad():
        _, grad_c, grad_cost, share = surrogate_terms(inside, cost, cap, colors, mass, weights, tau)
    torch.autograd.backward([inside, cost, cap], [grad_c, grad_cost, torch.full_like(cap, weights.max_cost)])
    return share


def surrogate_terms(inside, cost, cap, colors, mass, weights: Weights, tau: float):
    """The surrogate per image, its gradient with respect to the capped palette and to the costs
    (the cap's own term has gradient ``w_max``), and each colour's soft pixel share (B, k); see
    :func:`surrogate_loss`."""
    import torch

    d2 = (colors * colors).sum(-1, keepdim=True) - 2.0 * colors @ inside.transpose(1, 2)
    d2 = (d2 + (inside * inside).sum(-1).unsqueeze(1)).clamp_min_(0.0)
    z = (weights.pixel_mse * d2 + weights.mean_cost * cost.unsqueeze(1)).div_(-tau)
    top = z.max(dim=2, keepdim=True).values
    resp = z.sub_(top).exp_()
    total = resp.sum(2)
    lse = top.squeeze(-1) + total.log()
    resp.mul_((mass / total).unsqueeze(-1))  # m_i * p_ij, one exp over the (n, k) block
    share = resp.sum(1)
    grad_c = 2.0 * weights.pixel_mse * (share.unsqueeze(-1) * inside - resp.transpose(1, 2) @ colors)
    grad_cost = weights.mean_cost * share
    loss = -tau * (mass * lse).sum(1) + weights.max_cost * cap
    return loss, grad_c, grad_cost, share


def surrogate_loss(palette, cap, colors, mass, weights: Weights, tau: float):
    """Differentiable score, per image, of raw palettes (B, k, 3) with caps (B,) on weighted colours.

    ``colors`` (B, n, 3) in 0..255 with ``mass`` (B, n) summing to 1 per image. Each colour pays a
    soft minimum over the (capped) palette of its per-pixel objective
    ``(w_mse/3)||p - c||^2 + w_mean*cost(c)`` at temperature ``tau`` (exact as ``tau -> 0``).
    The max-cost term is ``w_max * cap``: every colour is held within the cap, so the cap bounds
    the max cost and equals it at the optimum; the cap is trained like a weight.
    """
    import torch

    c, cost = capped(palette, cap)
    d2 = (colors * colors).sum(-1, keepdim=True) - 2.0 * colors @ c.transpose(1, 2)
    d2 = d2 + (c * c).sum(-1).unsqueeze(1)
    per = weights.pixel_mse * d2.clamp_min(0.0) + weights.mean_cost * cost.unsqueeze(1)
    soft_min = -tau * torch.logsumexp(per / -tau, dim=2)
    with torch.no_grad():
        share = torch.einsum("bn,bnk->bk", mass, torch.softmax(per / -tau, dim=2))
    return (mass * soft_min).sum(1) + weights.max_cost * cap, share


def thumbnails(problems, size: int):
    """Every image resized with antialiasing to (B, 3, size, size), values in [0, 1]."""
    import torch
    from PIL import Image

    arrays = []
    for problem in problems:
        pixels = np.asarray(problem.image)
        if pixels.ndim == 2:
            pixels = np.repeat(pixels[:, :, None], 3, axis=2)
        small = Image.fromarray(np.ascontiguousarray(pixels[:, :, :3])).resize(
            (size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
        arrays.append(np.asarray(small, dtype=np.float32).transpose(2, 0, 1) / 255.0)
    return torch.from_numpy(np.stack(arrays))


def cosine(progress: float, final: float) -> float:
    """Cosine decay from 1 to ``final`` as ``progress`` goes from 0 to 1."""
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))
