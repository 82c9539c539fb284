"""What an export produced and how it verified: shared by every exporter, torch-free.

Error measure: ``max |candidate - reference| / max |reference|`` over the (R*R, R*R) output, and the
largest deviation of a row sum from 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from walkcut.runtime.sources.contract import ModelContract


class VerificationError(RuntimeError):
    """The exported model failed its check against its reference (the torch wrapper, or the source
    ONNX graph's own attention outputs)."""


@dataclass(frozen=True)
class ExportResult:
    """What one export produced and how it verified."""

    path: Path
    contract: ModelContract
    size_bytes: int
    seconds: float
    n_nodes: int
    rel_error: float
    max_abs_error: float
    row_sum_error: float
    tolerance: float

    def summary(self) -> str:
        """The one line the CLI prints."""
        return (f"{self.path}  {self.size_bytes / 1e6:.1f} MB  {self.seconds:.1f} s  "
                f"{self.n_nodes} nodes  {self.contract.precision}  max rel error {self.rel_error:.2e} "
                f"(abs {self.max_abs_error:.2e}, tolerance {self.tolerance:.0e})  "
                f"row sums within {self.row_sum_error:.1e}")


def compare(candidate: np.ndarray, reference: np.ndarray) -> tuple[float, float, float]:
    """``(relative error, max abs error, max |row sum - 1|)`` of ``candidate`` against ``reference``."""
    diff = np.abs(candidate.astype(np.float64) - reference.astype(np.float64))
    max_abs = float(diff.max())
    rel = max_abs / float(np.abs(reference).max())
    row = float(np.abs(candidate.astype(np.float64).sum(-1) - 1.0).max())
    return rel, max_abs, row
