"""In-graph aggregation of captured self-attention into one row-stochastic (R*R, R*R) matrix.

For each resolution r the captured head-averaged probabilities (B, r*r, r*r) are averaged over the
layers of that resolution, then brought to the output grid R x R:

- keys (columns): area average if r > R, bilinear upsampling if r < R, then rows renormalised to 1;
- queries (rows): average of the f x f finer queries that fall in one output cell if r > R
  (f = r / R), replication if r < R. Both keep rows stochastic.

The resolutions are combined with weights proportional to r (64:32:16:8, as DiffSeg), normalised to 1.
Everything here is plain torch ops that export to ONNX (Reshape, ReduceMean, Resize, Div).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def check_grid(resolution: int, attn_res: int) -> None:
    """Raise ValueError unless one of ``resolution`` and ``attn_res`` divides the other."""
    big, small = max(resolution, attn_res), min(resolution, attn_res)
    if big % small:
        raise ValueError(
            f"attn_res {attn_res} and attention resolution {resolution} must divide one another"
        )


def resolution_weights(resolutions: list[int] | tuple[int, ...]) -> tuple[float, ...]:
    """Weights proportional to the resolution, summing to 1 (64:32:16:8 -> 8/15, 4/15, 2/15, 1/15)."""
    total = float(sum(resolutions))
    return tuple(r / total for r in resolutions)


def resample_attention(probs: torch.Tensor, resolution: int, attn_res: int) -> torch.Tensor:
    """Bring row-stochastic attention (B, r*r, r*r) on an r x r grid to (B, R*R, R*R).

    Rows of the result sum to 1. r and R must divide one another (see :func:`check_grid`).
    """
    r, big_r = resolution, attn_res
    b = probs.shape[0]
    if r == big_r:
        return probs
    # keys: each row is an r x r map over key positions
    keys = probs.reshape(b * r * r, 1, r, r)
    if r > big_r:
        f = r // big_r
        keys = keys.reshape(b * r * r, big_r, f, big_r, f).mean(dim=(2, 4))  # area average
    else:
        keys = F.interpolate(keys, size=(big_r, big_r), mode="bilinear", align_corners=False)
    keys = keys.reshape(b, r * r, big_r * big_r)
    keys = keys / keys.sum(dim=-1, keepdim=True)  # (B, r*r, R*R), rows sum to 1
    # queries: rows laid out on the r x r grid
    q = keys.reshape(b, r, r, big_r * big_r)
    if r > big_r:
        f = r // big_r
        q = q.reshape(b, big_r, f, big_r, f, big_r * big_r).mean(dim=(2, 4))
    else:
        f = big_r // r
        # replicate each query row over its f x f block (expand + reshape is a static Expand in ONNX)
        q = q.reshape(b, r, 1, r, 1, big_r * big_r).expand(b, r, f, r, f, big_r * big_r)
    return q.reshape(b, big_r * big_r, big_r * big_r)


def aggregate_attention(captured: list[tuple[int, torch.Tensor]], attn_res: int,
                        resolutions: tuple[int, ...], weights: tuple[float, ...]) -> torch.Tensor:
    """Combine captured ``(resolution, probs)`` pairs into one (B, R*R, R*R) float32 matrix.

    Parameters
    ----------
    captured : list of (int, Tensor)
        Head-averaged probabilities per layer, (B, r*r, r*r).
    attn_res : int
        Output grid side R.
    resolutions, weights : tuple
        Resolutions to combine and their weights (same length, weights sum to 1).
    """
    out = None
    for res, w in zip(resolutions, weights):
        group = [p for r, p in captured if r == res]
        if not group:
            raise RuntimeError(f"no attention captured at resolution {res}")
        mean = group[0]
        for p in group[1:]:  # a running sum, not torch.stack: no extra (L, B, N, N) copy
            mean = mean + p
        if len(group) > 1:
            mean = mean / len(group)
        term = resample_attention(mean.float(), res, attn_res) * w
        out = term if out is None else out + term
    # the weights sum to 1 in exact arithmetic; renormalising removes rounding drift
    return out / out.sum(dim=-1, keepdim=True)
