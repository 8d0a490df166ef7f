"""Generative processes as Pyro model/guide pairs: models, likelihoods, networks and data."""

from .audio import (
    Signal,
    load_signal,
    mu_law_decode,
    mu_law_encode,
    read_wav,
    speech_signal,
    synthetic_signal,
    write_wav,
)
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
from .likelihoods import (
    LIKELIHOODS,
    BernoulliPixel,
    Categorical256,
    DiscretizedLogisticMixture,
    GaussianPixel,
    PixelLikelihood,
    make_likelihood,
    training_representation,
)
from .flow_guide import ConditionalIAF, FlowVAE, IAFNormal, LocalFlowGuide
from .hierarchical_vae import LocalTwoLayerGuide, TwoLayerVAE
from .layers import GatedResidualBlock, MaskedConv2d
from .linear_gaussian import LinearGaussian
from .local_guides import LocalGuide
from .neural_lm import GRULanguageModel
from .ngram import NGramModel
from .pixel_vae import PixelVAE
from .pixelcnn import PixelCNN
from .text import Vocabulary, WordData, load_words
from .networks import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from .toy_manifold import NUM_PIXELS, ToyManifold, ToyManifoldVAE, manifold_mean
from .vae import VAE, Autoencoder
from .wavenet import WaveNet

__all__ = [
    "Autoencoder",
    "BernoulliPixel",
    "Categorical256",
    "ConditionalIAF",
    "ConvDecoder",
    "ConvEncoder",
    "DATASETS",
    "DiscretizedLogisticMixture",
    "FlowVAE",
    "GRULanguageModel",
    "GatedResidualBlock",
    "GaussianPixel",
    "IAFNormal",
    "LocalFlowGuide",
    "LocalGuide",
    "LocalTwoLayerGuide",
    "MaskedConv2d",
    "PixelCNN",
    "PixelVAE",
    "NGramModel",
    "Vocabulary",
    "WordData",
    "LIKELIHOODS",
    "MLPDecoder",
    "MLPEncoder",
    "PixelLikelihood",
    "Signal",
    "VAE",
    "WaveNet",
    "load_signal",
    "mu_law_decode",
    "mu_law_encode",
    "read_wav",
    "speech_signal",
    "synthetic_signal",
    "write_wav",
    "load_words",
    "make_likelihood",
    "training_representation",
    "ImageData",
    "LinearGaussian",
    "NUM_PIXELS",
    "Split",
    "ToyManifold",
    "ToyManifoldVAE",
    "TwoLayerVAE",
    "binarize_dynamic",
    "binarize_static",
    "load_images",
    "manifold_mean",
    "read_idx",
    "to_levels",
    "uniform_dequantize",
    "write_idx",
]
