"""The classifier and nothing else: bundle, image checks, preprocessing, ONNX Runtime session.

Importing this package loads Pillow and numpy only; ONNX Runtime is imported when a
:class:`Classifier` is built, and torch only by :mod:`imgclf.model.export`.
"""

from imgclf.model.bundle import BundleError, Label, ModelBundle, Preprocessing, load_bundle
from imgclf.model.classifier import Classifier, ScoredLabel, load_classifier
from imgclf.model.images import (
    SUPPORTED_EXTENSIONS,
    CorruptImageError,
    DecodeTimeoutError,
    ImageError,
    ImageLimits,
    ImageTooLargeError,
    UnsupportedImageError,
    check_extension,
    inspect_image,
    picture_bytes,
)
from imgclf.model.preprocessing import preprocess

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "BundleError",
    "Classifier",
    "CorruptImageError",
    "DecodeTimeoutError",
    "ImageError",
    "ImageLimits",
    "ImageTooLargeError",
    "Label",
    "ModelBundle",
    "Preprocessing",
    "ScoredLabel",
    "UnsupportedImageError",
    "check_extension",
    "inspect_image",
    "load_bundle",
    "load_classifier",
    "picture_bytes",
    "preprocess",
]
