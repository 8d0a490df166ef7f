"""The model contracts of inference.protocols: the real models satisfy them, and a wrong
object is refused at the call with the argument, the protocol and the missing members."""

import pytest
import torch

from inference import (
    BernoulliLatentModel,
    EncoderDecoder,
    MarkovTextModel,
    bits_back_decode,
    bits_back_encode,
    decode_words,
    encode_words,
    map_complete,
    metropolis_within_gibbs,
    observed_channel,
    require,
)
from inference.protocols import protocol_members
from inference.uses.completion import marginal_log_likelihood, pixel_posterior
from ppl_models.ngram import NGramModel
from ppl_models.text import Vocabulary
from ppl_models.vae import VAE


def tiny_vae(likelihood="bernoulli"):
    return VAE((1, 4, 4), latent_dim=2, likelihood=likelihood, hidden=(4,))


def tiny_ngram():
    vocab = Vocabulary.from_words(["ab", "ba", "abba"])
    return NGramModel(2, vocab).fit_counts(vocab.encode(["ab", "ba", "abba"]))


def test_members_are_what_the_code_calls():
    assert protocol_members(EncoderDecoder) == ["decode", "encode", "image_shape"]
    assert protocol_members(BernoulliLatentModel) == [
        "decode", "encode", "image_shape", "latent_dim", "likelihood", "parameters"]
    assert protocol_members(MarkovTextModel) == ["conditional", "contexts", "order", "vocab"]


@pytest.mark.parametrize("likelihood", ["bernoulli", "logistic-mixture"])
def test_the_vaes_of_ppl_models_satisfy_the_latent_protocols(likelihood):
    vae = tiny_vae(likelihood)
    for protocol in (EncoderDecoder, BernoulliLatentModel):
        require(vae, protocol, "vae")  # does not raise
        assert isinstance(vae, protocol)


def test_the_ngram_satisfies_the_markov_protocol_and_not_the_latent_ones():
    ngram = tiny_ngram()
    require(ngram, MarkovTextModel, "lm")
    assert isinstance(ngram, MarkovTextModel)
    assert not isinstance(ngram, EncoderDecoder)
    assert not isinstance(tiny_vae(), MarkovTextModel)


def test_message_names_argument_protocol_and_missing_members():
    with pytest.raises(TypeError) as error:
        require(torch.nn.Linear(2, 2), EncoderDecoder, "vae")
    message = str(error.value)
    assert message.startswith("vae must satisfy EncoderDecoder (decode, encode, image_shape)")
    assert message.endswith("Linear lacks decode, encode, image_shape")


def test_completion_refuses_an_ngram_where_a_vae_is_wanted():
    channel = observed_channel(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4, dtype=torch.bool))
    ngram = tiny_ngram()
    z = torch.zeros(1, 2)
    calls = [lambda: map_complete(ngram, channel, steps=1),
             lambda: metropolis_within_gibbs(ngram, channel, num_steps=1),
             lambda: pixel_posterior(ngram, z, channel),
             lambda: marginal_log_likelihood(ngram, z, channel)]
    for call in calls:
        with pytest.raises(TypeError, match=r"^vae must satisfy EncoderDecoder .*NGramModel "
                                            r"lacks decode, encode, image_shape$"):
            call()


def test_bits_back_refuses_a_plain_module_before_touching_the_data():
    module = torch.nn.Sequential(torch.nn.Linear(16, 2))
    images = torch.zeros(2, 1, 4, 4)
    with pytest.raises(TypeError, match="vae must satisfy BernoulliLatentModel.*Sequential lacks "
                                        "decode, encode, image_shape, latent_dim, likelihood$"):
        bits_back_encode(module, images)
    with pytest.raises(TypeError, match="vae must satisfy BernoulliLatentModel"):
        bits_back_decode(module, b"\0" * 8)


def test_bits_back_still_refuses_a_non_bernoulli_vae_by_value():
    # the protocol holds (the members exist); the coder's own check rejects the likelihood
    with pytest.raises(ValueError, match="Bernoulli pixels"):
        bits_back_encode(tiny_vae("logistic-mixture"), torch.zeros(1, 1, 4, 4))


def test_word_coding_refuses_a_vae_where_an_ngram_is_wanted():
    vae = tiny_vae()
    with pytest.raises(TypeError, match="^lm must satisfy MarkovTextModel .*VAE lacks "
                                        "conditional, contexts, order, vocab$"):
        encode_words(vae, torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="^lm must satisfy MarkovTextModel"):
        decode_words(vae, b"\0" * 4)


def test_word_coding_round_trips_with_the_ngram():
    ngram = tiny_ngram()
    x = ngram.vocab.encode(["abba", "ab"])
    assert torch.equal(decode_words(ngram, encode_words(ngram, x)), x)
