"""Property tests: for any random stochastic matrix the labels are valid and repeatable."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from walkcut.runtime import cut_transition_matrix


@st.composite
def stochastic_matrices(draw):
    n = draw(st.integers(min_value=2, max_value=40))
    seed = draw(st.integers(min_value=0, max_value=2**31 - 1))
    density = draw(st.sampled_from([1.0, 0.5, 0.2]))
    rng = np.random.default_rng(seed)
    A = rng.uniform(0, 1, (n, n)) * (rng.uniform(0, 1, (n, n)) < density)
    A[np.arange(n), rng.integers(0, n, n)] += 0.1  # every row has an out-going edge
    return A / A.sum(axis=1, keepdims=True)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(P=stochastic_matrices(),
       mode=st.sampled_from(["walk", "dot", "cosine"]),
       threshold=st.sampled_from(["auto-ncut", "auto-mincut", 0.2, 1.0]))
def test_labels_valid_and_deterministic(P, mode, threshold):
    a = cut_transition_matrix(P, mode=mode, threshold=threshold)
    b = cut_transition_matrix(P, mode=mode, threshold=threshold)
    n = P.shape[0]
    assert a.labels.shape == (n,)
    assert a.labels.dtype.kind == "i"
    k = a.labels.max() + 1
    assert set(np.unique(a.labels)) == set(range(k))  # 0..K-1, none missing
    np.testing.assert_array_equal(a.labels, b.labels)
