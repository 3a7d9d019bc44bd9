"""Decoding and preprocessing: odd and hostile files get the right answer or the right error."""

from __future__ import annotations

import random
import tracemalloc

import numpy as np
import pytest
from model_helpers import encode
from PIL import Image

from imgclf.model.bundle import Preprocessing
from imgclf.model.classifier import Classifier
from imgclf.model.images import (
    CorruptImageError,
    DecodeTimeoutError,
    ImageError,
    ImageLimits,
    ImageTooLargeError,
    UnsupportedImageError,
)
from imgclf.model.preprocessing import preprocess
from tests.security.hostile_files import flat_png, jpeg_with_repeated_scans

CONFIG = Preprocessing()
LIMITS = ImageLimits()
WHITE = (255 - 127) / 128
DOG_CLASSES = {"Eskimo_dog", "Siberian_husky", "malamute"}


def solid(
    colour: tuple[int, ...], mode: str = "RGB", size: tuple[int, int] = (300, 200)
) -> Image.Image:
    return Image.new(mode, size, colour)


def top_label(classifier: Classifier, data: bytes) -> str:
    result = classifier.classify_bytes([data], LIMITS, top_k=1)[0]
    assert not isinstance(result, ImageError), str(result)
    return result[0].label


def test_output_is_a_contiguous_float32_chw_tensor(dog_bytes: bytes) -> None:
    tensor = preprocess(dog_bytes, CONFIG, LIMITS)
    assert tensor.shape == (3, 224, 224)
    assert tensor.dtype == np.float32
    assert tensor.flags.c_contiguous
    assert -1.0 <= tensor.min() < tensor.max() <= 1.0


def test_normalisation_and_channel_order() -> None:
    tensor = preprocess(encode(solid((255, 127, 0)), "PNG"), CONFIG, LIMITS)
    assert np.allclose(tensor[0], WHITE)
    assert np.allclose(tensor[1], 0.0)
    assert np.allclose(tensor[2], -127 / 128)


def test_other_input_sizes_follow_the_config() -> None:
    tensor = preprocess(
        encode(solid((1, 2, 3)), "PNG"), Preprocessing(input_size=32, resize=40), LIMITS
    )
    assert tensor.shape == (3, 32, 32)


def test_the_centre_is_kept() -> None:
    # A wide picture: red left third, green middle, blue right third; the crop sees only green.
    image = Image.new("RGB", (900, 300), (0, 255, 0))
    image.paste((255, 0, 0), (0, 0, 300, 300))
    image.paste((0, 0, 255), (600, 0, 900, 300))
    tensor = preprocess(encode(image, "PNG"), CONFIG, LIMITS)
    assert np.allclose(tensor[1], WHITE)
    assert np.allclose(tensor[0], -127 / 128)


def test_png_with_alpha_is_composited_on_white(
    classifier: Classifier, dog_image: Image.Image
) -> None:
    transparent = Image.new("RGBA", (300, 200), (0, 0, 0, 0))
    assert np.allclose(preprocess(encode(transparent, "PNG"), CONFIG, LIMITS), WHITE)
    opaque_dog = dog_image.convert("RGBA")
    assert top_label(classifier, encode(opaque_dog, "PNG")) == "Eskimo_dog"


def test_greyscale_gives_three_equal_channels(
    classifier: Classifier, dog_image: Image.Image
) -> None:
    data = encode(dog_image.convert("L"), "JPEG", quality=90)
    tensor = preprocess(data, CONFIG, LIMITS)
    assert np.array_equal(tensor[0], tensor[1])
    assert np.array_equal(tensor[1], tensor[2])
    assert top_label(classifier, data) in DOG_CLASSES


def test_sixteen_bit_greyscale_is_scaled_not_clipped() -> None:
    deep = Image.fromarray(np.full((50, 60), 32768, dtype=np.uint16))
    assert deep.mode.startswith("I")
    tensor = preprocess(encode(deep, "PNG"), CONFIG, LIMITS)
    assert np.allclose(tensor, (128 - 127) / 128)


def test_a_big_sixteen_bit_png_is_made_8_bits_without_a_float_copy() -> None:
    data = flat_png(7_000, 7_000, 16, 0, 1)  # 95 KB; 98 MB decoded; 392 MB as float64
    tracemalloc.start()  # numpy reports its allocations here (Pillow's are not counted)
    try:
        tensor = preprocess(data, CONFIG, LIMITS)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert np.allclose(tensor, -127 / 128)
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MB"  # the 8-bit copy (49 MB) and a band


def test_a_decode_past_its_time_limit_is_refused_for_good() -> None:
    # More scans than the door allows, with the door held open (the passes they take too, by a
    # pixel limit made larger): the time limit still holds.
    data = jpeg_with_repeated_scans(2_000, 3_000)  # 58 KB, 8 s of decoding
    limits = ImageLimits(max_jpeg_scans=10_000, max_pixels=10**10, decode_timeout_s=0.5)
    with pytest.raises(DecodeTimeoutError) as caught:
        preprocess(data, CONFIG, limits)
    assert str(caught.value) == (
        "Decoding the image took longer than the 0.5 s limit; it was set aside."
    )
    assert caught.value.status_code == 413


def test_palette_gif(classifier: Classifier, dog_image: Image.Image) -> None:
    data = encode(dog_image.convert("P", palette=Image.Palette.ADAPTIVE), "GIF")
    assert top_label(classifier, data) in DOG_CLASSES


def test_animated_gif_uses_the_first_frame() -> None:
    frames = [solid((255, 0, 0)).convert("P"), solid((0, 0, 255)).convert("P")]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    tensor = preprocess(data, CONFIG, LIMITS)
    assert np.allclose(tensor[0], WHITE)
    assert np.allclose(tensor[2], -127 / 128)


def test_palette_with_a_transparent_index() -> None:
    image = solid((0, 0, 0)).convert("P")
    tensor = preprocess(encode(image, "GIF", transparency=0), CONFIG, LIMITS)
    assert np.allclose(tensor, WHITE)


def test_cmyk_jpeg(classifier: Classifier, dog_image: Image.Image) -> None:
    data = encode(dog_image.convert("CMYK"), "JPEG", quality=90)
    assert Image.open(__import__("io").BytesIO(data)).mode == "CMYK"
    assert top_label(classifier, data) == "Eskimo_dog"


@pytest.mark.parametrize(
    ("orientation", "stored_as"),
    [
        (3, Image.Transpose.ROTATE_180),
        (6, Image.Transpose.ROTATE_90),
        (8, Image.Transpose.ROTATE_270),
        (2, Image.Transpose.FLIP_LEFT_RIGHT),
    ],
)
def test_exif_orientation_is_applied(
    classifier: Classifier, dog_image: Image.Image, orientation: int, stored_as: Image.Transpose
) -> None:
    upright = preprocess(encode(dog_image, "JPEG", quality=95), CONFIG, LIMITS)
    exif = Image.Exif()
    exif[0x0112] = orientation
    rotated = encode(dog_image.transpose(stored_as), "JPEG", quality=95, exif=exif.tobytes())
    tensor = preprocess(rotated, CONFIG, LIMITS)
    assert np.abs(tensor - upright).mean() < 0.02  # the same picture, up to JPEG noise
    assert top_label(classifier, rotated) == "Eskimo_dog"


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "BMP", "GIF", "WEBP"])
def test_a_one_pixel_image_is_classified(classifier: Classifier, image_format: str) -> None:
    data = encode(solid((200, 30, 30), size=(1, 1)), image_format)
    assert preprocess(data, CONFIG, LIMITS).shape == (3, 224, 224)
    assert top_label(classifier, data)


def test_webp_and_bmp_photos(classifier: Classifier, dog_image: Image.Image) -> None:
    assert top_label(classifier, encode(dog_image, "WEBP", quality=90)) == "Eskimo_dog"
    assert top_label(classifier, encode(dog_image, "BMP")) == "Eskimo_dog"


def test_draft_mode_gives_the_same_answer_on_a_big_jpeg(
    classifier: Classifier, dog_image: Image.Image
) -> None:
    big = dog_image.resize((dog_image.width * 4, dog_image.height * 4), Image.Resampling.BICUBIC)
    data = encode(big, "JPEG", quality=90)
    assert top_label(classifier, data) == "Eskimo_dog"


def test_truncated_jpeg(dog_bytes: bytes) -> None:
    with pytest.raises(CorruptImageError, match=r"^The image could not be decoded: "):
        preprocess(dog_bytes[: len(dog_bytes) // 2], CONFIG, LIMITS)


def test_a_damaged_png(dog_image: Image.Image) -> None:
    data = bytearray(encode(dog_image, "PNG"))
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    with pytest.raises(CorruptImageError):
        preprocess(bytes(data), CONFIG, LIMITS)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", CorruptImageError),
        (b"not an image, just text in a file named photo.jpg\n", UnsupportedImageError),
        (random.Random(1).randbytes(5000), UnsupportedImageError),
    ],
    ids=["empty", "text", "random-bytes"],
)
def test_non_images(data: bytes, error: type[ImageError]) -> None:
    with pytest.raises(error):
        preprocess(data, CONFIG, LIMITS)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_a_10000_by_10000_png_is_refused_by_the_pixel_limit() -> None:
    data = encode(Image.new("1", (10_000, 10_000)), "PNG")  # a real, complete file (~12 kB)
    with pytest.raises(ImageTooLargeError, match=r"100\.0 megapixels"):
        preprocess(data, CONFIG, LIMITS)


def test_the_pixel_limit_is_a_setting(dog_bytes: bytes) -> None:
    with pytest.raises(ImageTooLargeError):
        preprocess(dog_bytes, CONFIG, ImageLimits(max_pixels=100_000))


def test_damaged_jpegs_raise_only_image_errors(dog_bytes: bytes) -> None:
    """Random damage anywhere in a real JPEG: an answer or an ImageError, never a crash."""
    rng = random.Random(7)
    for _ in range(40):
        data = bytearray(dog_bytes)
        for _ in range(rng.randint(1, 20)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        cut = rng.choice([len(data), rng.randrange(1, len(data))])
        try:
            tensor = preprocess(bytes(data[:cut]), CONFIG, LIMITS)
        except ImageError:
            continue
        assert tensor.shape == (3, 224, 224)
        assert np.isfinite(tensor).all()


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")
def test_damaged_exif_is_ignored(dog_image: Image.Image) -> None:
    data = encode(dog_image, "JPEG", quality=90, exif=b"Exif\x00\x00MM\x00*garbage-garbage")
    tensor = preprocess(data, CONFIG, LIMITS)
    assert tensor.shape == (3, 224, 224)
