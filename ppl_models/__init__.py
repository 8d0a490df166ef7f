"""Generative processes as Pyro model/guide pairs: models, likelihoods, networks and data."""

from .linear_gaussian import LinearGaussian
from .toy_manifold import NUM_PIXELS, ToyManifold, ToyManifoldVAE, manifold_mean

__all__ = ["LinearGaussian", "NUM_PIXELS", "ToyManifold", "ToyManifoldVAE", "manifold_mean"]
