"""Decoding with another model than the encoder's raises ValueError, never other content.

Before the stream format 2 the only check was that the decoder consumed the stream: a pixel
model off by a few percent decoded 15 of 200 streams with a third of the pixels wrong, an
n-gram over "abcde" decoded "abcd" streams into other words, and a VAE with images (1, 2, 8)
decoded a (1, 4, 4) stream, all without an error.
"""

import random

import pytest
import torch

from inference.coding.bits_back import bits_back_decode, bits_back_encode
from inference.coding.range_coding import (
    decode_images,
    decode_words,
    encode_images,
    encode_words,
    range_decode,
    range_encode,
)
from ppl_models.ngram import NGramModel
from ppl_models.text import Vocabulary
from ppl_models.vae import VAE


def _independent(on):
    """Independent pixels with ``P(x = 1) = on: [C, H, W]``: symbols -> ``[..., C, H, W, 2]``."""
    return lambda s: torch.stack([1 - on.expand(s.shape), on.expand(s.shape)], -1).double()


def _slightly_other_pixel_models(seed):
    """``(images [3, 1, 4, 4], the encoder's model, a model off by ~5% per pixel)``."""
    g = torch.Generator().manual_seed(seed)
    on = torch.rand(1, 4, 4, generator=g) * 0.9 + 0.05
    images = (torch.rand(3, 1, 4, 4, generator=g) < on).long()
    other = (on + 0.05 * torch.randn(1, 4, 4, generator=g)).clamp(0.02, 0.98)
    return images, _independent(on), _independent(other)


def test_images_with_a_slightly_other_model_always_raise():
    for seed in range(200):
        images, model, other = _slightly_other_pixel_models(seed)
        data = encode_images(model, images)
        if seed in (0, 5):  # 5 decoded with 16 of 48 pixels wrong
            assert torch.equal(decode_images(model, data, (1, 4, 4)), images)
        with pytest.raises(ValueError, match="another model"):
            decode_images(other, data, (1, 4, 4))


def test_range_decode_with_slightly_other_tables_always_raises():
    # the same streams through range_encode / range_decode: 48 binary symbols each
    for seed in range(200):
        images, model, other = _slightly_other_pixel_models(seed)
        symbols = images.reshape(-1)
        probs, others = model(images).reshape(-1, 2), other(images).reshape(-1, 2)
        data = range_encode(symbols, probs)
        assert torch.equal(range_decode(data, lambda chunks: None if chunks else probs), symbols)
        with pytest.raises(ValueError, match="another model"):
            range_decode(data, lambda chunks: None if chunks else others)


def test_words_with_another_vocabulary_always_raise():
    # the same words counted by an n-gram over "abcd" (encoder) and over "abcde" (decoder)
    small, large = Vocabulary("abcd"), Vocabulary("abcde")
    for seed in range(40):
        r = random.Random(seed)
        words = ["".join(r.choice("abcd") for _ in range(r.randint(1, 4)))
                 for _ in range(r.randint(1, 3))]
        lm = NGramModel(2, small).fit_counts(small.encode(words))
        data = encode_words(lm, small.encode(words))
        assert torch.equal(decode_words(lm, data), small.encode(words))
        with pytest.raises(ValueError, match="another model"):
            decode_words(NGramModel(2, large).fit_counts(large.encode(words)), data)


def test_bits_back_with_another_image_shape_or_latent_dim_is_refused():
    torch.manual_seed(0)
    vae = VAE((1, 4, 4), latent_dim=3, hidden=(8,)).eval()
    images = (torch.rand(4, 1, 4, 4) < 0.4).float()
    data = bits_back_encode(vae, images)
    reshaped = VAE((1, 2, 8), latent_dim=3, hidden=(8,)).eval()
    reshaped.load_state_dict(vae.state_dict())  # the same weights: it decoded (4, 1, 2, 8)
    with pytest.raises(ValueError, match=r"latent_dim=3 and images \(1, 4, 4\), decoding with "
                                         r"one with latent_dim=3 and images \(1, 2, 8\)"):
        bits_back_decode(reshaped, data)
    wider = VAE((1, 4, 4), latent_dim=4, hidden=(8,)).eval()
    with pytest.raises(ValueError, match="latent_dim=3 .* latent_dim=4 .*another VAE"):
        bits_back_decode(wider, data)
    assert torch.equal(bits_back_decode(vae, data)[0], images)


def test_a_pixel_model_that_looks_at_undecoded_pixels_always_raises():
    # p(on) from the mean of the whole image: the decoder sees other tables than the encoder
    # (undecoded pixels are 0), which decoded 12 of 100 streams to other images unnoticed
    def peeking(s):
        on = (0.2 + 0.6 * s.double().mean((1, 2, 3), keepdim=True)).expand(s.shape)
        return torch.stack([1 - on, on], -1)
    # since the late session of 2026-11-28 encoding refuses it (it checks that later pixels
    # do not move earlier tables); a stream made without that check is still refused
    for seed in range(100):
        images = (torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(seed)) < 0.5)
        with pytest.raises(ValueError, match="pixel_probs is not causal"):
            encode_images(peeking, images.long())
        stream = _encode_unchecked(peeking, images.long())
        with pytest.raises(ValueError, match="another model"):
            decode_images(peeking, stream, (1, 4, 4))


def _encode_unchecked(pixel_probs, symbols):
    from unittest import mock

    import inference.coding.range_coding as range_coding
    with mock.patch.object(range_coding, "_check_decodable", lambda *args: None):
        return encode_images(pixel_probs, symbols, verify=False)


def test_encoding_refuses_tables_that_decoding_could_not_rebuild():
    # a PixelCNN with dropout left in training mode coded 40 bytes without complaint that no
    # decoding (in training or evaluation mode) could read back
    from ppl_models import PixelCNN

    torch.manual_seed(0)
    model = PixelCNN((1, 4, 4), channels=8, num_blocks=1, first_kernel_size=3, dropout=0.5)
    images = (torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0)) < 0.5).long()

    def pixel_probs(symbols):
        on = model.distribution(symbols.float()).mean  # [n, 1, 4, 4]
        return torch.stack([1 - on, on], -1).clamp_min(1e-7)

    with pytest.raises(ValueError, match=r"other tables on a second call .* call \.eval\(\)"):
        encode_images(pixel_probs, images)
    model.eval()
    stream = encode_images(pixel_probs, images)
    assert torch.equal(decode_images(pixel_probs, stream, (1, 4, 4)), images)


def _self_dependent(s):
    """Pixel i's table from pixel i itself: what a type-'B' mask in the first layer does."""
    on = 0.2 + 0.6 * s.double()
    return torch.stack([1 - on, on], -1)


def _cross_image(s):
    """Image b's table at pixel i from image b - 1's pixel i (statistics over the batch)."""
    on = 0.2 + 0.6 * s.roll(1, 0).double()
    return torch.stack([1 - on, on], -1)


def _first_layer_mask_b():
    from ppl_models import MaskedConv2d

    torch.manual_seed(0)
    conv = MaskedConv2d(1, 2, 3).eval()  # mask_type 'B' by default: sees the pixel itself

    def pixel_probs(s):
        with torch.no_grad():
            return conv(s.float()).permute(0, 2, 3, 1)[:, None].softmax(-1)
    return pixel_probs


@pytest.mark.parametrize("make", [lambda: _self_dependent, lambda: _cross_image,
                                  _first_layer_mask_b],
                         ids=["self-dependent", "cross-image", "first-layer-mask-B"])
def test_encoding_refuses_tables_that_see_the_pixel_itself_or_another_images_pixel(make):
    # each was encoded (36 to 44 bytes) into a stream that decode_images then refused: the
    # images were lost
    pixel_probs = make()
    images = torch.randint(0, 2, (3, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="pixel_probs is not causal: a pixel's table changes "
                                         "when only that pixel and those after it"):
        encode_images(pixel_probs, images)
    stream = _encode_unchecked(pixel_probs, images)
    with pytest.raises(ValueError, match="another model"):  # what the check spares
        decode_images(pixel_probs, stream, (1, 4, 4))


def test_a_model_of_earlier_pixels_of_other_images_still_codes():
    # decoding has the earlier pixels of every image of the batch, so these tables are
    # rebuilt exactly (the library's PixelCNN: test_range_coding's round trips)
    images = torch.randint(0, 2, (3, 1, 4, 4), generator=torch.Generator().manual_seed(1))

    def earlier_of_the_previous_image(s):  # decodable: the earlier pixels of every image
        shifted = s.roll(1, 0).flatten(1).roll(1, 1)  # image b - 1's pixel i - 1
        shifted[:, 0] = 0
        on = 0.2 + 0.6 * shifted.double().reshape(s.shape)
        return torch.stack([1 - on, on], -1)

    stream = encode_images(earlier_of_the_previous_image, images)
    assert torch.equal(decode_images(earlier_of_the_previous_image, stream, (1, 4, 4)), images)
