"""The ONNX Runtime classifier: a batch of preprocessed images -> top-k labels with scores.

ONNX Runtime is imported when a :class:`Classifier` is built, never at import time, so the API
can use :mod:`imgclf.model` image checks without having ONNX Runtime installed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from imgclf.model.bundle import ModelBundle, bundle_error, load_bundle
from imgclf.model.cpu import Int8DotProduct, int8_dot_product
from imgclf.model.images import ImageError, ImageLimits
from imgclf.model.preprocessing import preprocess

if TYPE_CHECKING:
    from imgclf.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoredLabel:
    label: str
    score: float


class Classifier:
    """ONNX Runtime over a bundle. ``session.run`` releases the GIL.

    ``threads``: intra-op threads of a call (0: one per CPU core). ``spinning``: whether ONNX
    Runtime's threads busy-wait between the layers of a call instead of sleeping; they stop
    when the call returns (``session.force_spinning_stop``), so the cores are free for decoding
    between calls. Alone, a call is faster with it; beside a thread that decodes, or the API
    parsing the next request, it slows them all (bench/model.py; ``IMGCLF_MODEL_SPINNING``).

    ``single_thread_runs`` adds a second session with one thread, for calls made while other
    work (decoding, other model calls) keeps the cores busy: ONNX Runtime's parallel loops wait
    for their slowest thread at every layer, so a call spread over cores that are also busy
    stalls, where one-thread calls side by side keep every core working.
    """

    def __init__(
        self,
        bundle: ModelBundle,
        threads: int = 0,
        *,
        spinning: bool = False,
        single_thread_runs: bool = False,
    ) -> None:
        self.bundle = bundle
        self.model_id = bundle.ref
        self.threads = threads or os.cpu_count() or 1
        warn_if_int8_saturates(bundle)
        self._session = self._open_session(self.threads, spinning)
        self._single_thread_session = (
            self._open_session(1, spinning)
            if single_thread_runs and self.threads > 1
            else self._session
        )
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise bundle_error(bundle.path, f"the model has {len(inputs)} inputs; it needs one.")
        self._input_name = inputs[0].name
        batch_dim = inputs[0].shape[0] if inputs[0].shape else None
        # A model exported with a fixed batch size is run in chunks of that size.
        self._fixed_batch = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else None
        self._warm_up()

    def _open_session(self, threads: int, spinning: bool) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if spinning else "0"
        )
        # Without it, the threads went on spinning after the call and slowed the decoding
        # that follows: a decode+classify loop took 10 ms an image instead of 8.5 (4 rounds).
        options.add_session_config_entry("session.force_spinning_stop", "1")
        try:
            return ort.InferenceSession(
                str(self.bundle.onnx_path),
                sess_options=options,
                providers=["CPUExecutionProvider"],
            )
        except Exception as error:  # ONNX Runtime raises its own exception types
            raise bundle_error(
                self.bundle.path, f"ONNX Runtime cannot load the model ({error})."
            ) from None

    @property
    def input_size(self) -> int:
        return self.bundle.preprocessing.input_size

    def _warm_up(self) -> None:
        """First run allocates ORT's buffers; it also proves the output fits the labels."""
        size = self.input_size
        try:
            output = self._run(np.zeros((1, 3, size, size), dtype=np.float32))
            if self._single_thread_session is not self._session:
                self._run(np.zeros((1, 3, size, size), dtype=np.float32), single_thread=True)
        except Exception as error:  # any failure here means an unusable model
            raise bundle_error(
                self.bundle.path,
                f"the model does not run on a (1, 3, {size}, {size}) input ({error}).",
            ) from None
        if output.shape != (1, self.bundle.num_classes):
            raise bundle_error(
                self.bundle.path,
                f"the model outputs shape {output.shape} for one image; the labels need "
                f"(1, {self.bundle.num_classes}).",
            )

    def _run(self, batch: np.ndarray, *, single_thread: bool = False) -> np.ndarray:
        session = self._single_thread_session if single_thread else self._session
        if self._fixed_batch is None or len(batch) == self._fixed_batch:
            outputs: list[Any] = session.run(None, {self._input_name: batch})
            return np.asarray(outputs[0], dtype=np.float32).reshape(len(batch), -1)
        step = self._fixed_batch
        parts = []
        for start in range(0, len(batch), step):
            chunk = batch[start : start + step]
            padded = np.zeros((step, *batch.shape[1:]), dtype=np.float32)
            padded[: len(chunk)] = chunk
            outputs = session.run(None, {self._input_name: padded})
            parts.append(np.asarray(outputs[0], dtype=np.float32).reshape(step, -1)[: len(chunk)])
        return np.concatenate(parts)

    def preprocess(self, data: bytes, limits: ImageLimits) -> np.ndarray:
        """Decode one image into this model's input, (3, H, W) float32; raises ImageError."""
        return preprocess(data, self.bundle.preprocessing, limits)

    def scores(self, batch: np.ndarray, *, single_thread: bool = False) -> np.ndarray:
        """Class probabilities, shape (N, classes), for a (N, 3, H, W) float32 batch.

        ``single_thread``: run on the one-thread session (when built), because the cores are
        busy with other work."""
        size = self.input_size
        if batch.ndim != 4 or batch.shape[1:] != (3, size, size):
            raise ValueError(f"expected a batch of shape (N, 3, {size}, {size}), got {batch.shape}")
        if len(batch) == 0:
            return np.zeros((0, self.bundle.num_classes), dtype=np.float32)
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        output: np.ndarray = self._run(batch, single_thread=single_thread)
        if self.bundle.output == "probabilities":
            return output
        output = output - output.max(axis=1, keepdims=True)
        np.exp(output, out=output)
        output /= output.sum(axis=1, keepdims=True)
        return output

    def classify(
        self, batch: np.ndarray, top_k: int = 5, *, single_thread: bool = False
    ) -> list[list[ScoredLabel]]:
        """Top-k labels per image, best first, from one ONNX Runtime run."""
        probabilities = self.scores(batch, single_thread=single_thread)
        k = max(1, min(top_k, probabilities.shape[1]))
        best = np.argpartition(-probabilities, k - 1, axis=1)[:, :k]
        labels = self.bundle.labels
        results = []
        for row, candidates in zip(probabilities, best, strict=True):
            ordered = candidates[np.argsort(-row[candidates], kind="stable")]
            results.append([ScoredLabel(labels[i].name, float(row[i])) for i in ordered])
        return results

    def classify_bytes(
        self, images: Sequence[bytes], limits: ImageLimits, top_k: int = 5
    ) -> list[list[ScoredLabel] | ImageError]:
        """Decode each image and classify the good ones in one run; a bad one gets its error."""
        results: list[list[ScoredLabel] | ImageError] = []
        tensors: list[np.ndarray] = []
        good: list[int] = []
        for position, data in enumerate(images):
            try:
                tensors.append(self.preprocess(data, limits))
            except ImageError as error:
                results.append(error)
            else:
                results.append([])
                good.append(position)
        if tensors:
            for position, top in zip(good, self.classify(np.stack(tensors), top_k), strict=True):
                results[position] = top
        return results


def warn_if_int8_saturates(bundle: ModelBundle) -> None:
    """Say so when an INT8 model with 8-bit weights is served by a CPU whose 8-bit dot
    products saturate: its answers there differ from FP32's more than its bundle records."""
    if bundle.precision != "int8" or bundle.weight_bits == 7:
        return
    if int8_dot_product() is Int8DotProduct.SATURATING:
        log.warning(
            "%s has 8-bit weights and this CPU has no VNNI: its 8-bit products saturate here, "
            "so its answers differ from FP32's more than where it was checked. Rebuild it on "
            "this machine (imgclf quantize --weight-bits 7) for weights that cannot saturate.",
            bundle.ref,
        )


def load_classifier(
    settings: Settings,
    *,
    single_thread_runs: bool = False,
    model: str | None = None,
) -> Classifier:
    """The classifier of ``model`` (a name, or ``name@version``), by default the default
    model's live version; raises BundleError with the fix."""
    from imgclf.model.repository import bundle_path

    path = bundle_path(settings, model)
    bundle = load_bundle(path)
    return Classifier(
        bundle,
        threads=settings.resolved_model_threads,
        spinning=settings.model_spinning,
        single_thread_runs=single_thread_runs,
    )
