"""Baseline features the examples set beside a model's: PCA of the pixels."""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA


def fit_pca(x: np.ndarray, components: int, seed: int) -> PCA:
    """PCA fitted to ``x: [n, d]`` with ``min(components, n, d)`` components (scikit-learn
    refuses more): a ``--latent-dim`` above the pixels or the training images still gets its
    model, beside the largest PCA there is. The number used is ``pca.n_components_``; record
    it with the results."""
    return PCA(min(components, *x.shape), random_state=seed).fit(x)
