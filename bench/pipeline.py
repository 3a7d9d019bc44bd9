"""The yardsticks the service is measured against, on the same 640x480 JPEG.

- the raw loop: decode + classify one image at a time in one process (the model on every core);
- the machine's limit: one single-threaded decode + classify loop per core, each in its own
  process, started together; their images/s summed. No serving design on these cores should
  beat it by much: it has no HTTP, no queue, no database and no waiting.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import time
from multiprocessing.queues import SimpleQueue
from multiprocessing.synchronize import Barrier
from pathlib import Path

from PIL import Image

from imgclf.model.bundle import load_bundle
from imgclf.model.classifier import Classifier
from imgclf.model.images import ImageLimits

ROOT = Path(__file__).resolve().parents[1]
DOG = ROOT / "tests" / "data" / "dog.jpeg"
MODEL_DIR = Path(
    os.environ.get("IMGCLF_MODEL_DIR", ROOT / "data/models/efficientnet-lite0/1")
).resolve()  # peers run in other folders


def photo_640x480() -> bytes:
    buffer = io.BytesIO()
    Image.open(DOG).convert("RGB").resize((640, 480), Image.Resampling.LANCZOS).save(
        buffer, format="JPEG", quality=90
    )
    return buffer.getvalue()


def cores() -> int:
    return len(os.sched_getaffinity(0))


def raw_pipeline(image: bytes, seconds: float) -> tuple[float, float]:
    """(images/s, median ms per image) of decode + classify, one at a time."""
    classifier = Classifier(load_bundle(MODEL_DIR))
    limits = ImageLimits()
    for _ in range(10):
        classifier.classify_bytes([image], limits)
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        began = time.perf_counter()
        classifier.classify_bytes([image], limits)
        times.append(time.perf_counter() - began)
    elapsed = time.perf_counter() - start
    times.sort()
    return len(times) / elapsed, times[len(times) // 2] * 1000


def machine_limit(image: bytes, seconds: float, processes: int = 0) -> float:
    """Images/s of ``processes`` (default: one per core) one-thread loops run side by side."""
    count = processes or cores()
    context = multiprocessing.get_context("spawn")
    start_together = context.Barrier(count)
    results: SimpleQueue[float] = context.SimpleQueue()
    lanes = [
        context.Process(target=_lane, args=(image, seconds, start_together, results))
        for _ in range(count)
    ]
    for lane in lanes:
        lane.start()
    for lane in lanes:
        lane.join(seconds + 120)
    if any(lane.exitcode != 0 for lane in lanes):
        raise RuntimeError(f"a limit lane failed: exit codes {[lane.exitcode for lane in lanes]}")
    return sum(results.get() for _ in range(count))


def _lane(
    image: bytes, seconds: float, start_together: Barrier, results: SimpleQueue[float]
) -> None:
    classifier = Classifier(load_bundle(MODEL_DIR), threads=1)
    limits = ImageLimits()
    for _ in range(10):
        classifier.classify_bytes([image], limits)
    start_together.wait()
    done = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        classifier.classify_bytes([image], limits)
        done += 1
    results.put(done / (time.perf_counter() - start))
