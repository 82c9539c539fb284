"""Record a module call into a CUDA graph, shared by the GPU benchmark scripts in this folder."""

from __future__ import annotations


def capture(fn, static_input, *, warmup: int = 3):
    """Record ``fn(static_input)`` into a CUDA graph.

    Warm-up calls run on a side stream first (allocations and cuDNN algorithm choices must happen
    outside the graph). Returns ``(replay, static_output)``: ``replay()`` reruns the recorded kernels
    on whatever ``static_input`` then holds and refreshes ``static_output`` in place.
    """
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.no_grad():
        for _ in range(warmup):
            fn(static_input)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.no_grad():
        static_output = fn(static_input)
    return graph.replay, static_output
