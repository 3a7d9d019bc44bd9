"""The classifier on real photos: right classes, batching, top-k, bad images in a batch."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from model_helpers import PHOTOS

from imgclf.model.classifier import Classifier, load_classifier
from imgclf.model.images import CorruptImageError, ImageLimits, UnsupportedImageError
from imgclf.settings import Settings

LIMITS = ImageLimits()


def test_the_seed_dog_is_an_eskimo_dog(classifier: Classifier, dog_bytes: bytes) -> None:
    [top] = classifier.classify_bytes([dog_bytes], LIMITS, top_k=5)
    assert isinstance(top, list)
    assert top[0].label == "Eskimo_dog"
    assert top[0].score > 0.5
    assert round(top[0].score, 4) == pytest.approx(0.6222, abs=2e-4)


@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_real_photos_land_in_the_expected_classes(classifier: Classifier, name: str) -> None:
    load, expected = PHOTOS[name]
    [top] = classifier.classify_bytes([load()], LIMITS, top_k=3)
    assert isinstance(top, list)
    assert top[0].label in expected, top


def test_top_k_is_sorted_and_sized(classifier: Classifier, dog_bytes: bytes) -> None:
    batch = classifier.preprocess(dog_bytes, LIMITS)[None]
    for k in (1, 5, 1000, 5000):
        [top] = classifier.classify(batch, top_k=k)
        assert len(top) == min(k, 1000)
        scores = [s.score for s in top]
        assert scores == sorted(scores, reverse=True)
    assert sum(s.score for s in top) == pytest.approx(1.0, abs=1e-4)
    assert len({s.label for s in top}) >= 998  # Keras names repeat twice ("crane", "maillot")


def test_a_batch_equals_single_calls(classifier: Classifier) -> None:
    images = [load() for load, _ in PHOTOS.values()]
    batch = np.stack([classifier.preprocess(data, LIMITS) for data in images])
    together = classifier.scores(batch)
    alone = np.concatenate([classifier.scores(x[None]) for x in batch])
    assert np.allclose(together, alone, atol=1e-5)
    batched = classifier.classify(batch, top_k=3)
    singles = [classifier.classify(x[None], top_k=3)[0] for x in batch]
    assert [[s.label for s in top] for top in batched] == [
        [s.label for s in top] for top in singles
    ]
    bytes_batched = classifier.classify_bytes(images, LIMITS, top_k=3)
    assert [[s.label for s in top] for top in bytes_batched if isinstance(top, list)] == [
        [s.label for s in top] for top in singles
    ]


def test_a_bad_image_fails_only_its_own_slot(classifier: Classifier, dog_bytes: bytes) -> None:
    results = classifier.classify_bytes(
        [b"plain text", dog_bytes, dog_bytes[:2000], dog_bytes], LIMITS, top_k=2
    )
    assert isinstance(results[0], UnsupportedImageError)
    assert isinstance(results[2], CorruptImageError)
    for good in (results[1], results[3]):
        assert isinstance(good, list)
        assert good[0].label == "Eskimo_dog"
        assert len(good) == 2


def test_nothing_runs_when_every_image_is_bad(classifier: Classifier) -> None:
    results = classifier.classify_bytes([b"", b"x"], LIMITS)
    assert [type(r) for r in results] == [CorruptImageError, UnsupportedImageError]
    assert classifier.classify_bytes([], LIMITS) == []


def test_batches_of_the_wrong_shape_are_refused(classifier: Classifier) -> None:
    with pytest.raises(ValueError, match=r"\(N, 3, 224, 224\)"):
        classifier.classify(np.zeros((3, 224, 224), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(N, 3, 224, 224\)"):
        classifier.classify(np.zeros((1, 3, 256, 256), dtype=np.float32))
    assert classifier.classify(np.zeros((0, 3, 224, 224), dtype=np.float32)) == []


def test_load_classifier_reads_settings(model_dir: Path) -> None:
    classifier = load_classifier(Settings(model_dir=model_dir, model_threads=1))
    assert classifier.threads == 1
    # Answers name the model as name@version; the bundle's own id names its file's checksum.
    assert classifier.model_id == classifier.bundle.ref == "efficientnet-lite0@1"
    assert classifier.bundle.model_id.startswith("efficientnet-lite0@")


@pytest.mark.parametrize("spinning", [True, False])
def test_spinning_follows_the_setting_and_is_told_to_stop_with_each_call(
    model_dir: Path, dog_bytes: bytes, spinning: bool
) -> None:
    classifier = load_classifier(
        Settings(model_dir=model_dir, model_threads=2, model_spinning=spinning),
        single_thread_runs=True,
    )
    # ONNX Runtime keeps the options each session was opened with.
    for session in (classifier._session, classifier._single_thread_session):
        options = session.get_session_options()
        allowed = options.get_session_config_entry("session.intra_op.allow_spinning")
        assert allowed == ("1" if spinning else "0")
        assert options.get_session_config_entry("session.force_spinning_stop") == "1"
    answer = classifier.classify_bytes([dog_bytes], LIMITS)[0]
    assert not isinstance(answer, Exception)
    assert answer[0].label == "Eskimo_dog"


def test_serving_imports_no_torch(model_dir: Path, dog_bytes: bytes) -> None:
    """The serving path (package, classifier, predict) never loads torch or the onnx package."""
    script = textwrap.dedent(
        f"""
        import sys
        import imgclf.model.classifier, imgclf.model.predict_cli
        assert "onnxruntime" not in sys.modules, "importing the classifier loaded onnxruntime"
        from pathlib import Path
        from imgclf.model.bundle import load_bundle
        from imgclf.model.classifier import Classifier
        from imgclf.model.images import ImageLimits
        classifier = Classifier(load_bundle(Path({str(model_dir)!r})), threads=1)
        data = Path({str(Path(__file__).parents[1] / "data" / "dog.jpeg")!r}).read_bytes()
        [top] = classifier.classify_bytes([data], ImageLimits())
        assert top[0].label == "Eskimo_dog", top
        loaded = sorted(m for m in ("torch", "onnx", "torchvision") if m in sys.modules)
        assert not loaded, loaded
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
