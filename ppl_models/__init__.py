"""Generative processes as Pyro model/guide pairs: models, likelihoods, networks and data."""

from .data import (
    DATASETS,
    ImageData,
    Split,
    binarize_dynamic,
    binarize_static,
    load_images,
    read_idx,
    to_levels,
    uniform_dequantize,
    write_idx,
)
from .linear_gaussian import LinearGaussian
from .toy_manifold import NUM_PIXELS, ToyManifold, ToyManifoldVAE, manifold_mean

__all__ = [
    "DATASETS",
    "ImageData",
    "LinearGaussian",
    "NUM_PIXELS",
    "Split",
    "ToyManifold",
    "ToyManifoldVAE",
    "binarize_dynamic",
    "binarize_static",
    "load_images",
    "manifold_mean",
    "read_idx",
    "to_levels",
    "uniform_dequantize",
    "write_idx",
]
