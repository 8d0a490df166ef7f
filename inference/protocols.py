"""What the model-using code needs from a model, stated as :class:`typing.Protocol`\\ s.

Most of :mod:`inference` takes any Pyro model/guide pair. A few uses need more than a pair:
image completion calls the model's encoder and decoder, bits-back coding also needs its
latent size and a Bernoulli pixel likelihood, and word coding needs a Markov model's next-symbol
tables. Each of those needs is a protocol here, and each public function that relies on one
calls :func:`require` first, so a wrong object fails at the call with the name of the argument,
the protocol and the members it lacks, not deep inside the algorithm with an
``AttributeError``.

The protocols describe members, not types: any object with them will do (for example
:class:`ppl_models.vae.VAE` for the first two and :class:`ppl_models.ngram.NGramModel` for the
third); no class needs to inherit from them.
"""

from __future__ import annotations

import inspect
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["EncoderDecoder", "BernoulliLatentModel", "MarkovTextModel", "STANDARD_NORMAL",
           "GAUSSIAN_ENCODER", "protocol_members", "require", "require_encoded_posterior",
           "require_standard_prior"]

STANDARD_NORMAL = "standard normal"
"""The ``latent_prior`` an :class:`EncoderDecoder` has when it declares none: ``N(0, I)``."""


@runtime_checkable
class EncoderDecoder(Protocol):
    """A latent-variable image model with a Gaussian encoder and a pixel decoder
    (:mod:`inference.uses.completion`).

    Attributes:
        image_shape: ``(C, H, W)`` of one image.
    """

    image_shape: tuple[int, ...]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x: [batch, C, H, W]`` -> ``(loc, scale)`` of ``q(z | x)``, each ``[batch, d]``."""
        ...

    def decode(self, z: torch.Tensor) -> Any:
        """``z: [..., d]`` -> ``p(x | z)``, a distribution with ``mean`` (for Bernoulli pixels
        also ``probs``) of shape ``[..., C, H, W]``."""
        ...


@runtime_checkable
class BernoulliLatentModel(EncoderDecoder, Protocol):
    """An :class:`EncoderDecoder` with Bernoulli pixels and a standard normal prior, as
    bits-back coding needs it (:mod:`inference.coding.bits_back`).

    Attributes:
        latent_dim: ``d``, the size of ``z``.
        likelihood: the pixel likelihood; its ``name`` must be ``"bernoulli"`` (checked by
            the coder, which needs binary pixels).
    """

    latent_dim: int
    likelihood: Any

    def parameters(self) -> Any:
        """The model's tensors (``torch.nn.Module.parameters``): they fix device and dtype."""
        ...


@runtime_checkable
class MarkovTextModel(Protocol):
    """A Markov (n-gram-like) model of words as symbol sequences
    (:func:`inference.coding.range_coding.encode_words` and ``decode_words``).

    Attributes:
        order: ``n``: each symbol depends on the ``n - 1`` before it.
        vocab: the symbol table (``bos``, ``EOS``, ``pad``), as
            :class:`ppl_models.text.Vocabulary`.
    """

    order: int
    vocab: Any

    def contexts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x: [batch, max_len]`` -> ``(targets, contexts [batch, max_len, n - 1], mask)``."""
        ...

    def conditional(self, contexts: torch.Tensor) -> torch.Tensor:
        """``contexts: [..., n - 1]`` -> next-symbol probabilities ``[..., V]``."""
        ...


def protocol_members(protocol: type) -> list[str]:
    """The attribute and method names a protocol (with its parent protocols) asks for, sorted."""
    names = set()
    for klass in protocol.__mro__:
        if klass in (Protocol, object) or not getattr(klass, "_is_protocol", False):
            continue
        names.update(getattr(klass, "__annotations__", {}))
        names.update(name for name, value in vars(klass).items()
                     if callable(value) and not name.startswith("_"))
    return sorted(names)


def require_standard_prior(vae: Any, argument_name: str) -> None:
    """``TypeError`` naming ``argument_name`` unless ``vae``'s ``decode`` takes ``z`` alone
    and its prior of ``z`` is ``N(0, I)``, which completion, super-resolution and bits-back
    coding use in closed form: a model with another prior says so in a ``latent_prior``
    attribute (:class:`ppl_models.TwoLayerVAE` does), one without it is taken to have the
    standard normal."""
    prior = getattr(vae, "latent_prior", STANDARD_NORMAL)
    if prior != STANDARD_NORMAL:
        raise TypeError(f"{argument_name}: {type(vae).__name__}'s latent prior is {prior}, "
                        "but this use scores z under the standard normal N(0, I); it takes "
                        "single-layer VAEs (ppl_models.VAE)")
    try:
        parameters = inspect.signature(vae.decode).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: taken as it is
        return
    required = [p.name for p in parameters if p.default is p.empty and
                p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if len(required) > 1:
        raise TypeError(f"{argument_name}.decode must take z alone; "
                        f"{type(vae).__name__}.decode needs {', '.join(required)} (an "
                        "autoregressive decoder such as PixelVAE's is not supported here)")


def require_finite_parameters(vae: Any, argument_name: str) -> None:
    """``FloatingPointError`` naming ``argument_name`` and the parameters of ``vae`` (when it
    is a module) that hold NaN or infinite values: a diverged fit leaves them, and the
    decoder's NaN logits then failed deep inside torch's distributions. One host read."""
    if not isinstance(vae, torch.nn.Module):
        return
    named = {name: p for name, p in vae.named_parameters() if not p.is_meta and not
             isinstance(p, torch.nn.parameter.UninitializedTensorMixin)}
    if not named:
        return
    finite = torch.stack([torch.isfinite(p.detach()).all().cpu() for p in named.values()])
    bad = [name for name, ok in zip(named, finite.tolist()) if not ok]
    if bad:
        raise FloatingPointError(
            f"{argument_name}: {type(vae).__name__}'s parameters {bad[:4]}"
            f"{' ...' if len(bad) > 4 else ''} hold NaN or infinite values (training diverged, "
            "or they were set so); reload or reinitialize them")


GAUSSIAN_ENCODER = "the Gaussian encode(x) gives"
"""The ``encoded_posterior`` an :class:`EncoderDecoder` has when it declares none: its guide's
``q(z | x)`` is ``N(loc, scale)`` of ``encode(x)``."""


def require_encoded_posterior(vae: Any, argument_name: str, use: str) -> None:
    """``TypeError`` naming ``argument_name`` unless ``vae``'s guide ``q(z | x)`` is the
    Gaussian ``encode(x)`` gives, which ``use`` (bits-back coding) codes with: a model whose
    guide is another distribution says so in an ``encoded_posterior`` attribute
    (:class:`ppl_models.FlowVAE`, whose ``encode`` is the base of its flow, does)."""
    posterior = getattr(vae, "encoded_posterior", GAUSSIAN_ENCODER)
    if posterior != GAUSSIAN_ENCODER:
        raise TypeError(f"{argument_name}: {type(vae).__name__}'s q(z | x) is {posterior}, but "
                        f"{use} uses N(encode(x)) as q, so its cost would be that guide's "
                        "-ELBO, not the model's; it takes VAEs whose guide is their encoder's "
                        "Gaussian (ppl_models.VAE)")


def require(obj: Any, protocol: type, argument_name: str) -> None:
    """Raise ``TypeError`` unless ``obj`` has every member of ``protocol``.

    The message names the argument, the protocol, the members it needs and those ``obj``
    lacks, e.g. ``vae must satisfy EncoderDecoder (decode, encode, image_shape); NGramModel
    lacks decode, encode, image_shape``. A ``protocol`` that is not a
    :class:`typing.Protocol` (``int``, a plain class) asks for no member, so everything would
    satisfy it: ``TypeError`` naming it.
    """
    if not getattr(protocol, "_is_protocol", False) or protocol is Protocol:
        raise TypeError(f"require: protocol must be a typing.Protocol class such as "
                        f"EncoderDecoder (it names the members {argument_name} needs), got "
                        f"{getattr(protocol, '__name__', repr(protocol))}")
    needed = protocol_members(protocol)
    missing = [name for name in needed if not hasattr(obj, name)]
    if missing:
        raise TypeError(f"{argument_name} must satisfy {protocol.__name__} "
                        f"({', '.join(needed)}); {type(obj).__name__} lacks "
                        f"{', '.join(missing)}")
