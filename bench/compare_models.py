"""FP32 vs INT8 vs Lite2, side by side: speed, CPU, memory, size, and answers against FP32.

    python bench/model.py --models-only    # this comparison alone; rewrites "## Models"
    python bench/compare_models.py         # the same

Reads ``<repository>/<name>/1`` for the three models that ``make models`` builds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from functools import partial
from importlib import metadata
from pathlib import Path

import numpy as np

from imgclf.model import calibration as cal
from imgclf.model.bundle import ModelBundle, load_bundle
from imgclf.model.classifier import Classifier
from imgclf.model.images import ImageLimits
from imgclf.model.quantize import Agreement, agreement

ROOT = Path(__file__).resolve().parents[1]
DOG = ROOT / "tests" / "data" / "dog.jpeg"
MODELS = ("efficientnet-lite0", "efficientnet-lite0-int8", "efficientnet-lite2")
REFERENCE = MODELS[0]
INT8 = MODELS[1]
BATCHES = (1, 8)
ROUNDS = 3
HEADING = "## Models: FP32, INT8, Lite2"
HELD_OUT_VIEWS = 8  # random crops per held-out picture, besides its centre crop
SURE = 0.5  # FP32 top-1 probability above which an answer is one FP32 is sure of


@dataclass
class ModelFigures:
    bundle: ModelBundle
    images_per_s: dict[int, float]
    cpu_ms_per_image: dict[int, float]
    rss_mb: float
    probabilities: np.ndarray
    dog: str


def held_out_pictures() -> list[cal.Picture]:
    """The packaged photos the default INT8 calibration leaves out, and the seed's dog."""
    _, held_out = cal.split_halves(cal.packaged_pictures())
    return [*held_out, cal.picture_from_bytes(DOG.name, DOG.read_bytes())]


def held_out_inputs(pictures: list[cal.Picture], bundle: ModelBundle) -> np.ndarray:
    """Centre crop and the same random crops for every model (the crop draws do not depend on
    the input size), prepared with the model's own preprocessing."""
    config = bundle.preprocessing
    return np.concatenate(
        [
            cal.centre_views(pictures, config),
            cal.random_views(pictures, config, HELD_OUT_VIEWS, seed=7),
        ]
    )


def throughput(
    classifiers: dict[str, Classifier], budget_s: float
) -> tuple[dict[str, dict[int, float]], dict[str, dict[int, float]]]:
    """Images/s and CPU ms per image per model and batch, best of interleaved rounds, so that
    a burst of other work on the machine does not land on one model only."""
    rng = np.random.default_rng(0)
    inputs = {
        name: {
            b: rng.standard_normal((b, 3, c.input_size, c.input_size), dtype=np.float32)
            for b in BATCHES
        }
        for name, c in classifiers.items()
    }
    wall: dict[tuple[str, int], float] = {}
    cpu: dict[tuple[str, int], float] = {}
    for _ in range(ROUNDS):
        for name, classifier in classifiers.items():
            for batch, x in inputs[name].items():
                w, c = best_wall_and_cpu(partial(classifier.scores, x), budget_s / ROUNDS)
                key = (name, batch)
                wall[key], cpu[key] = min(w, wall.get(key, w)), min(c, cpu.get(key, c))
    ips = {n: {b: b / wall[n, b] for b in BATCHES} for n in classifiers}
    cpu_ms = {n: {b: 1000 * cpu[n, b] / b for b in BATCHES} for n in classifiers}
    return ips, cpu_ms


def best_wall_and_cpu(
    fn: partial[object], budget_s: float, min_runs: int = 5
) -> tuple[float, float]:
    fn()
    walls: list[float] = []
    cpus: list[float] = []
    started = time.perf_counter()
    while len(walls) < min_runs or time.perf_counter() - started < budget_s:
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return min(walls), min(cpus)


def peak_rss_mb(model_dir: Path, threads: int) -> float:
    """Peak RSS of a fresh process that loads the bundle and classifies a batch of 8."""
    script = textwrap.dedent(
        f"""
        import numpy as np
        from pathlib import Path
        from imgclf.model.bundle import load_bundle
        from imgclf.model.classifier import Classifier

        c = Classifier(load_bundle(Path({str(model_dir)!r})), threads={threads})
        c.classify(np.zeros((8, 3, c.input_size, c.input_size), dtype=np.float32))
        status = Path("/proc/self/status").read_text()
        print(int(status.split("VmHWM:")[1].split()[0]))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    return int(done.stdout) / 1024


def measure(repository: Path, threads: int, budget_s: float) -> dict[str, ModelFigures]:
    bundles = {name: load_bundle(repository / name / "1") for name in MODELS}
    classifiers = {name: Classifier(b, threads=threads) for name, b in bundles.items()}
    ips, cpu_ms = throughput(classifiers, budget_s)
    pictures = held_out_pictures()
    figures = {}
    for name, classifier in classifiers.items():
        x = held_out_inputs(pictures, classifier.bundle)
        dog = classifier.classify_bytes([DOG.read_bytes()], ImageLimits(), 1)[0]
        figures[name] = ModelFigures(
            bundle=classifier.bundle,
            images_per_s=ips[name],
            cpu_ms_per_image=cpu_ms[name],
            rss_mb=peak_rss_mb(classifier.bundle.path, threads),
            probabilities=classifier.scores(x),
            dog=dog[0].label if isinstance(dog, list) else f"error: {dog}",
        )
    return figures


def report(figures: dict[str, ModelFigures], threads: int, load: tuple[float, float]) -> str:
    from model import cpu_model

    from imgclf.model.cpu import int8_dot_product
    from imgclf.model.export import MODELS as SPECS

    reference = figures[REFERENCE]
    sure = reference.probabilities.max(axis=1) >= SURE
    pictures = len(held_out_pictures())
    lines = [
        HEADING,
        "",
        f"Measured {dt.date.today().isoformat()} by `python bench/model.py --models-only` "
        f"(part of `make bench`, after `make models`) on {cpu_model()} (8-bit dot products: "
        f"{int8_dot_product()}), {os.cpu_count()} logical CPUs, "
        f"{threads} inference threads, onnxruntime {metadata.version('onnxruntime')}; best of "
        f"{ROUNDS} interleaved rounds; load average {load[0]:.1f} at the start, {load[1]:.1f} "
        "at the end. Answers are compared with FP32 Lite0's on "
        f"{len(reference.probabilities)} held-out inputs: the centre crop and {HELD_OUT_VIEWS} "
        f"random crops (half mirrored) of {pictures} pictures the INT8 calibration never saw (the "
        "other half of the sample photos scikit-image and matplotlib ship, and tests/data/"
        f"dog.jpeg); FP32 is sure (top-1 probability >= {SURE}) of {int(sure.sum())} of them. "
        f"The INT8 model's weights take {figures[INT8].bundle.weight_bits} bits.",
        "",
        "| model | input | images/s, batch 1 | images/s, batch 8 | CPU ms/image, batch 1 "
        "| CPU ms/image, batch 8 | peak RSS | model file | top-1 agreement | top-1 agreement "
        "where FP32 is sure | top-5 overlap | dog.jpeg | published top-1 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- "
        "| ---: |",
    ]
    agreements: dict[str, tuple[Agreement, Agreement]] = {}
    for name, f in figures.items():
        every = agreement(reference.probabilities, f.probabilities)
        confident = agreement(reference.probabilities[sure], f.probabilities[sure])
        agreements[name] = every, confident
        size_mb = f.bundle.onnx_path.stat().st_size / 1e6
        lines.append(
            f"| {name} | {f.bundle.preprocessing.input_size} | {f.images_per_s[1]:.1f} "
            f"| {f.images_per_s[8]:.1f} | {f.cpu_ms_per_image[1]:.1f} "
            f"| {f.cpu_ms_per_image[8]:.1f} | {f.rss_mb:.0f} MB | {size_mb:.1f} MB "
            f"| {every.top1:.1%} | {confident.top1:.1%} | {every.top5_overlap:.1%} | {f.dog} "
            f"| {SPECS[name].top1_published} |"
        )
    int8 = figures[INT8]
    speed = {b: int8.images_per_s[b] / reference.images_per_s[b] for b in BATCHES}
    every, confident = agreements[INT8]
    lines += [
        "",
        f"- INT8 at least 1.6x FP32's images/s: {speed[1]:.2f}x at batch 1, "
        f"{speed[8]:.2f}x at batch 8.",
        f"- INT8 top-1 agreement with FP32 at least 95% on held-out inputs: {every.top1:.1%} "
        f"of all {every.inputs}, {confident.top1:.1%} of the {confident.inputs} FP32 is sure of.",
        f"- dog.jpeg by INT8: {int8.dog}.",
        "- Most held-out pictures are not of ImageNet's classes (text, a page, gravel, cells, a "
        "galaxy field), so FP32 often hesitates between near-equal guesses, and any 8-bit "
        'model flips some of those: see "INT8: the recipe" below for what was tried.',
        "- Lite2 is another network: its agreement with Lite0 says how often the two differ, "
        "not which one is right (on ImageNet, Lite2 is the more accurate).",
        "",
    ]
    return "\n".join(lines)


def run(repository: Path, threads: int, budget_s: float) -> str:
    load_start = os.getloadavg()[0]
    figures = measure(repository, threads, budget_s)
    return report(figures, threads, (load_start, os.getloadavg()[0]))


def main() -> None:
    from model import DOCS, write_section

    from imgclf.settings import Settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=ROOT / "data" / "models")
    parser.add_argument("--no-write", action="store_true", help="print, do not update the docs")
    parser.add_argument("--budget", type=float, default=3.0, help="seconds per measurement")
    args = parser.parse_args()
    section = run(args.repository, Settings().resolved_model_threads, args.budget)
    print(section)
    if not args.no_write:
        write_section(section, DOCS, HEADING)


if __name__ == "__main__":
    main()
