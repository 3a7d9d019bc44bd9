"""The photos the stress test uploads: real photos of different sizes, made once into a cache.

``dog.jpeg`` from the tests, four photos that scikit-image ships (coffee, chelsea, astronaut,
rocket) saved as JPEG, and one 12-megapixel JPEG made by upscaling coffee to 4032x3024 and
adding sensor-like noise, so that its size (a few MB) is that of a phone photo, not of a
smooth upscale that JPEG squeezes into a few hundred KB.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = ROOT / "stress_test" / "results" / "photos"
DOG = ROOT / "tests" / "data" / "dog.jpeg"
SKIMAGE_PHOTOS = ("coffee", "chelsea", "astronaut", "rocket")
PHONE_SIZE = (4032, 3024)  # 12.2 MP, a common phone sensor
PHONE_NAME = "phone-12mp.jpg"


def _jpeg(image: object, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)  # type: ignore[attr-defined]
    return buffer.getvalue()


def _phone_photo(seed: int = 12) -> bytes:
    import numpy as np
    from PIL import Image
    from skimage import data

    base = Image.fromarray(data.coffee()).resize(PHONE_SIZE, Image.Resampling.BICUBIC)
    pixels = np.asarray(base, dtype=np.int16)
    noise = np.random.default_rng(seed).normal(0, 8, pixels.shape).astype(np.int16)
    noisy = np.clip(pixels + noise, 0, 255).astype(np.uint8)
    return _jpeg(Image.fromarray(noisy), quality=90)


def _make(name: str) -> bytes:
    if name == "dog.jpeg":
        return DOG.read_bytes()
    if name == PHONE_NAME:
        return _phone_photo()
    from PIL import Image
    from skimage import data

    return _jpeg(Image.fromarray(getattr(data, Path(name).stem)()).convert("RGB"))


def photo_names() -> list[str]:
    return ["dog.jpeg", *(f"{name}.jpg" for name in SKIMAGE_PHOTOS), PHONE_NAME]


def load_photos(cache: Path | None = None) -> dict[str, bytes]:
    """{file name: JPEG bytes}, made into ``cache`` on first use (atomic, safe to race)."""
    folder = Path(cache or os.environ.get("IMGCLF_STRESS_PHOTOS") or DEFAULT_CACHE)
    folder.mkdir(parents=True, exist_ok=True)
    photos = {}
    for name in photo_names():
        path = folder / name
        if not path.exists():
            descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=".photo-")
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(_make(name))
            os.replace(temporary, path)
        photos[name] = path.read_bytes()
    return photos


def with_unique_comment(jpeg: bytes, token: bytes) -> bytes:
    """The same picture with a JPEG comment segment after SOI: new bytes, so a new md5 (a cache
    miss), at no encoding cost to the load generator."""
    segment = b"\xff\xfe" + (len(token) + 2).to_bytes(2, "big") + token
    return jpeg[:2] + segment + jpeg[2:]


if __name__ == "__main__":
    for name, content in load_photos().items():
        print(f"{name}: {len(content) / 1024:.0f} KB")
