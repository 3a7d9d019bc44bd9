"""Model benchmark: inference throughput, decode cost, thread spinning, lanes, memory.

    python bench/model.py                # `make bench`; rewrites "## Model" and "## Models"
    python bench/model.py --no-write     # print only
    python bench/model.py --models-only  # FP32 vs INT8 vs Lite2 only (bench/compare_models.py)

Reads the bundle from IMGCLF_MODEL_DIR (default data/models/efficientnet-lite0/1) and the thread
count from IMGCLF_MODEL_THREADS (default: one per core). PyTorch eager runs when torch is
installed (the `export` extra), on the same weights.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import platform
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from importlib import metadata
from pathlib import Path

import compare_models
import numpy as np
from PIL import Image

from imgclf.model.bundle import ModelBundle, load_bundle
from imgclf.model.classifier import Classifier
from imgclf.model.images import ImageLimits
from imgclf.model.preprocessing import decode_rgb, preprocess, to_tensor
from imgclf.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
BATCHES = (1, 4, 8, 16, 32)
PHOTO_SIZES = {"0.3 MP": (640, 480), "2 MP": (1728, 1152), "12 MP": (4000, 3000)}
LIMITS = ImageLimits()


def seconds_per_call(
    fn: Callable[[], object],
    budget_s: float,
    min_runs: int = 5,
    clock: Callable[[], float] = time.perf_counter,
    warm_up: bool = True,
) -> float:
    """Best time of one call by ``clock``, after a warm-up call, over about ``budget_s`` seconds.

    The best of many runs, not the median: on a machine shared with other work, slower runs
    measure the neighbours rather than the code.
    """
    if warm_up:
        fn()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - started < budget_s:
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return min(times)


def wall_and_cpu(
    fn: Callable[[], object], budget_s: float, min_runs: int, warm_up: bool
) -> tuple[float, float]:
    """Best wall time and best process CPU time of one call (CPU time, summed over threads,
    is what an image costs whatever else the machine runs; wall time is what a client sees)."""
    if warm_up:
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


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else platform.machine()


# --- inference -------------------------------------------------------------------------------


ROUNDS = 3


@dataclass
class Throughput:
    images_per_s: dict[int, float]
    cpu_ms_per_image: dict[int, float]


def torch_engine(threads: int, size: int) -> Callable[[np.ndarray], object] | None:
    """PyTorch eager on the same weights, or None without torch (a serving-only install)."""
    try:
        import torch

        from imgclf.model.network import load_pretrained
    except ImportError:
        return None
    torch.set_num_threads(threads)
    net = load_pretrained(size)

    def eager(x: np.ndarray) -> object:
        with torch.inference_mode():
            return net(torch.from_numpy(x))

    return eager


def inference_throughput(
    bundle: ModelBundle, threads: int, budget_s: float
) -> tuple[Throughput, Throughput | None]:
    """Images/s and CPU ms per image, per batch size, for ONNX Runtime and PyTorch eager.

    Measured in interleaved rounds, keeping each one's best, so that a burst of other work on
    the machine does not land on one engine or one batch size only.
    """
    classifier = Classifier(bundle, threads=threads)
    rng = np.random.default_rng(0)
    size = bundle.preprocessing.input_size
    inputs = {b: rng.standard_normal((b, 3, size, size), dtype=np.float32) for b in BATCHES}
    engines: dict[str, Callable[[np.ndarray], object]] = {"ort": classifier.scores}
    eager = torch_engine(threads, size)
    if eager is not None:
        engines["torch"] = eager
    wall: dict[tuple[str, int], float] = {}
    cpu: dict[tuple[str, int], float] = {}
    for round_ in range(ROUNDS):
        for name, run in engines.items():
            for batch, x in inputs.items():
                key = (name, batch)
                w, c = wall_and_cpu(
                    partial(run, x),
                    budget_s / ROUNDS,
                    min_runs=5 if name == "ort" else 1,
                    warm_up=round_ == 0,
                )
                wall[key], cpu[key] = min(w, wall.get(key, w)), min(c, cpu.get(key, c))
    ort = Throughput(
        {b: b / wall["ort", b] for b in BATCHES}, {b: 1000 * cpu["ort", b] / b for b in BATCHES}
    )
    eager_ips = None
    if eager is not None:
        eager_ips = Throughput(
            {b: b / wall["torch", b] for b in BATCHES},
            {b: 1000 * cpu["torch", b] / b for b in BATCHES},
        )
    return ort, eager_ips


# --- decoding --------------------------------------------------------------------------------


def source_photos() -> list[Image.Image]:
    """Real photos to build test pictures from: the seed's dog, plus scikit-image's if present."""
    paths = [ROOT / "tests" / "data" / "dog.jpeg"]
    try:
        import skimage

        folder = Path(str(skimage.__file__)).parent / "data"
        paths += [folder / n for n in ("coffee.png", "chelsea.png", "rocket.jpg", "astronaut.png")]
    except ImportError:
        pass
    return [Image.open(p).convert("RGB") for p in paths if p.exists()]


def photo_like_jpeg(width: int, height: int, photos: list[Image.Image], seed: int = 0) -> bytes:
    """A camera-like JPEG (quality 90): real photos tiled at about their own scale, plus grain.

    A smooth upscale of a small picture compresses to a fraction of a real photo's size and
    decodes unrealistically fast (JPEG decoding time follows the entropy-coded bytes). Rows of
    real photos near their own size, with mild luminance grain, give a 12 MP file of 3-4 MB,
    as a phone's.
    """
    rng = np.random.default_rng(seed)
    canvas = Image.new("RGB", (width, height))
    y = 0
    while y < height:
        x, row_height = 0, int(rng.integers(300, 520))
        while x < width:
            photo = photos[int(rng.integers(len(photos)))]
            tile_width = max(1, round(photo.width * row_height / photo.height))
            tile = photo.resize((tile_width, row_height), Image.Resampling.LANCZOS)
            if rng.random() < 0.5:
                tile = tile.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            canvas.paste(tile, (x, y))
            x += tile.width
        y += row_height
    pixels = np.asarray(canvas, dtype=np.float32)
    pixels += rng.normal(0.0, 3.0, (height, width, 1)).astype(np.float32)
    grainy = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    buffer = io.BytesIO()
    grainy.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@dataclass
class DecodeResult:
    name: str
    size: tuple[int, int]
    file_bytes: int
    draft_ms: float
    no_draft_ms: float
    full_decode_ms: float


def cpu_ms(fn: Callable[[], object], budget_s: float) -> float:
    """Decoding is single-threaded: its thread's CPU time is its cost, which (unlike wall time)
    does not count the time spent waiting for a core on a busy machine."""
    return 1000 * seconds_per_call(fn, budget_s, clock=time.thread_time)


def decode_costs(bundle: ModelBundle, budget_s: float) -> list[DecodeResult]:
    photos = source_photos()
    config = bundle.preprocessing
    results = []
    for name, (width, height) in PHOTO_SIZES.items():
        data = photo_like_jpeg(width, height, photos)

        def full_decode(data: bytes = data) -> None:
            Image.open(io.BytesIO(data)).load()

        def no_draft(data: bytes = data) -> None:
            to_tensor(decode_rgb(data, config.resize, LIMITS, draft=False), config)

        results.append(
            DecodeResult(
                name=name,
                size=(width, height),
                file_bytes=len(data),
                draft_ms=cpu_ms(partial(preprocess, data, config, LIMITS), budget_s),
                no_draft_ms=cpu_ms(no_draft, budget_s),
                full_decode_ms=cpu_ms(full_decode, budget_s),
            )
        )
    return results


# --- spinning --------------------------------------------------------------------------------


@dataclass
class SpinResult:
    spinning: bool
    alone_ips: float
    beside_decoding_ips: float
    decodes_per_s: float


def beside_decoding(
    classifier: Classifier, x: np.ndarray, data: bytes, bundle: ModelBundle, seconds: float
) -> tuple[float, float]:
    """Model images/s and decodes/s while one thread decodes and this one runs the model."""
    stop = threading.Event()
    decoded = 0

    def decode_loop() -> None:
        nonlocal decoded
        while not stop.is_set():
            preprocess(data, bundle.preprocessing, LIMITS)
            decoded += 1

    worker = threading.Thread(target=decode_loop)
    worker.start()
    images, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        classifier.scores(x)
        images += len(x)
    elapsed = time.perf_counter() - started
    stop.set()
    worker.join()
    return images / elapsed, decoded / elapsed


def spinning_costs(bundle: ModelBundle, threads: int, budget_s: float) -> list[SpinResult]:
    """Batch-8 images/s alone, then beside a thread decoding 2 MP JPEGs (as when serving)."""
    data = photo_like_jpeg(*PHOTO_SIZES["2 MP"], source_photos(), seed=1)
    x = np.random.default_rng(0).standard_normal((8, 3, 224, 224), dtype=np.float32)
    results = []
    for spinning in (False, True):
        classifier = Classifier(bundle, threads=threads, spinning=spinning)
        alone = 8 / seconds_per_call(partial(classifier.scores, x), budget_s)
        images_per_s, decodes_per_s = beside_decoding(classifier, x, data, bundle, 2 * budget_s)
        results.append(SpinResult(spinning, alone, images_per_s, decodes_per_s))
    return results


# --- lanes -----------------------------------------------------------------------------------


@dataclass
class LaneResult:
    lanes: int
    threads_per_call: int
    batch: int
    images_per_s: float
    cpu_ms_per_image: float


def lanes_run(
    classifier: Classifier, lanes: int, single_thread: bool, batch: int, seconds: float
) -> tuple[float, float]:
    """Images/s and CPU ms per image of ``lanes`` threads, each decoding a batch of 0.3 MP
    JPEGs then classifying it, as the worker's lanes do."""
    data = photo_like_jpeg(*PHOTO_SIZES["0.3 MP"], source_photos(), seed=2)
    stop = threading.Event()
    done = [0] * lanes

    def lane(index: int) -> None:
        while not stop.is_set():
            tensors = [classifier.preprocess(data, LIMITS) for _ in range(batch)]
            classifier.scores(np.stack(tensors), single_thread=single_thread)
            done[index] += batch

    workers = [threading.Thread(target=lane, args=(index,)) for index in range(lanes)]
    started, cpu = time.perf_counter(), time.process_time()
    for worker in workers:
        worker.start()
    time.sleep(seconds)
    stop.set()
    for worker in workers:
        worker.join()
    elapsed, cpu_used = time.perf_counter() - started, time.process_time() - cpu
    return sum(done) / elapsed, cpu_used * 1000 / max(1, sum(done))


def lane_costs(bundle: ModelBundle, threads: int, budget_s: float) -> list[LaneResult]:
    """One lane whose calls spread over every thread, against one lane per core whose calls
    run on one thread each: what the batching worker does alone and under load."""
    classifier = Classifier(bundle, threads=threads, single_thread_runs=True)
    results = []
    for batch in (1, 8):
        for lanes, single_thread in ((1, False), (threads, True)):
            ips, cpu_ms = lanes_run(classifier, lanes, single_thread, batch, 2 * budget_s)
            results.append(LaneResult(lanes, 1 if single_thread else threads, batch, ips, cpu_ms))
    return results


# --- memory ----------------------------------------------------------------------------------


def peak_rss_mb(model_dir: Path, threads: int) -> tuple[float, float]:
    """Peak RSS of a fresh process after loading the bundle, and after a batch of 32."""
    script = textwrap.dedent(
        f"""
        import numpy as np
        from pathlib import Path
        from imgclf.model.bundle import load_bundle
        from imgclf.model.classifier import Classifier

        def peak_kb():  # VmHWM, not ru_maxrss, which keeps the forking parent's peak
            status = Path("/proc/self/status").read_text()
            return int(status.split("VmHWM:")[1].split()[0])

        c = Classifier(load_bundle(Path({str(model_dir)!r})), threads={threads})
        print(peak_kb())
        c.classify(np.zeros((32, 3, 224, 224), dtype=np.float32))
        print(peak_kb())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    loaded, batched = (int(v) / 1024 for v in done.stdout.split())
    return loaded, batched


# --- report ----------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def report(
    load: tuple[float, float],
    threads: int,
    ort: Throughput,
    eager: Throughput | None,
    decodes: list[DecodeResult],
    spins: list[SpinResult],
    lanes: list[LaneResult],
    rss: tuple[float, float],
) -> str:
    versions = ", ".join(
        f"{name} {metadata.version(name)}" for name in ("onnxruntime", "pillow", "numpy")
    )
    if eager is not None:
        versions += f", torch {metadata.version('torch')}"
    lines = [
        "## Model",
        "",
        f"Measured {dt.date.today().isoformat()} by `python bench/model.py` (part of `make bench`) "
        f"on {cpu_model()}, {os.cpu_count()} logical CPUs, {threads} inference threads; "
        f"{versions}. Best of repeated runs; load average {load[0]:.1f} at the start, "
        f"{load[1]:.1f} at the end (the machine is shared with other work, which lowers every "
        "figure here).",
        "",
        "### Inference (EfficientNet-Lite0, 224x224): images/s, and CPU time per image",
        "",
        "| batch | ONNX Runtime | PyTorch eager | ratio | ONNX Runtime CPU ms/image "
        "| PyTorch CPU ms/image | ratio |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for b in BATCHES:
        o_ips, o_cpu = ort.images_per_s[b], ort.cpu_ms_per_image[b]
        if eager is None:
            lines.append(f"| {b} | {o_ips:.1f} | not installed | | {o_cpu:.1f} | | |")
        else:
            e_ips, e_cpu = eager.images_per_s[b], eager.cpu_ms_per_image[b]
            lines.append(
                f"| {b} | {o_ips:.1f} | {e_ips:.1f} | {o_ips / e_ips:.1f}x "
                f"| {o_cpu:.1f} | {e_cpu:.1f} | {e_cpu / o_cpu:.1f}x |"
            )
    lines += [
        "",
        "### Decode + preprocess (CPU ms per image, photo-like JPEG, quality 90)",
        "",
        "| photo | pixels | file | ours (draft) | same without draft | full decode only "
        "| full decode / ours |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for d in decodes:
        lines.append(
            f"| {d.name} | {d.size[0]}x{d.size[1]} | {d.file_bytes / 1e6:.2f} MB "
            f"| {d.draft_ms:.1f} | {d.no_draft_ms:.1f} | {d.full_decode_ms:.1f} "
            f"| {d.full_decode_ms / d.draft_ms:.1f}x |"
        )
    lines += [
        "",
        "### ONNX Runtime thread spinning (batch 8)",
        "",
        "| idle threads spin | model alone (images/s) | model beside a decoding thread (images/s) "
        "| 2 MP decodes/s beside it |",
        "| --- | ---: | ---: | ---: |",
    ]
    for s in spins:
        lines.append(
            f"| {'yes' if s.spinning else 'no (default)'} | {s.alone_ips:.1f} "
            f"| {s.beside_decoding_ips:.1f} | {s.decodes_per_s:.1f} |"
        )
    lines += [
        "",
        "### Sharing the cores: decode + classify (0.3 MP JPEG) in lanes",
        "",
        "| batch | lanes x threads per model call | images/s | CPU ms/image |",
        "| ---: | --- | ---: | ---: |",
    ]
    for lane in lanes:
        lines.append(
            f"| {lane.batch} | {lane.lanes} x {lane.threads_per_call} "
            f"| {lane.images_per_s:.1f} | {lane.cpu_ms_per_image:.1f} |"
        )
    lines += [
        "",
        "### Memory",
        "",
        f"Peak RSS of a fresh process: {rss[0]:.0f} MB after loading the bundle (with warm-up), "
        f"{rss[1]:.0f} MB after classifying a batch of 32.",
        "",
        "### Targets",
        "",
    ]
    if eager is not None:
        ratio8 = ort.images_per_s[8] / eager.images_per_s[8]
        cpu_ratio8 = eager.cpu_ms_per_image[8] / ort.cpu_ms_per_image[8]
        lines.append(
            "- ONNX Runtime at least 3x PyTorch eager at batch 8: "
            f"{ratio8:.1f}x in images/s, {cpu_ratio8:.1f}x in CPU per image; "
            f"{verdict(ratio8 >= 3)}."
        )
    else:
        lines.append("- ONNX Runtime vs PyTorch eager: not measured (torch is not installed).")
    big = decodes[-1]
    speedup = big.full_decode_ms / big.draft_ms
    lines += [
        f"- 12 MP JPEG decode + preprocess under 40 ms: {big.draft_ms:.1f} ms, "
        f"{verdict(big.draft_ms < 40)}.",
        f"- ... and at least 4x faster than a full decode ({big.full_decode_ms:.0f} ms): "
        f"{speedup:.1f}x, {verdict(speedup >= 4)}.",
        "",
        "### Reading these figures",
        "",
        "- PyTorch eager swings most from run to run here: its OpenMP threads wait for each "
        "other at every layer, so when a neighbour takes one of the two cores a batch can take "
        "ten times longer (and burn CPU while waiting). ONNX Runtime, whose threads sleep "
        "between calls, is steadier. The CPU-time columns are the fairer comparison on a busy "
        "machine.",
        "- Decoding figures are the decoding thread's CPU time, which waiting for a core does "
        "not inflate. Draft mode skips most of the inverse DCT, colour conversion and the big "
        "resize, but not the entropy (Huffman) decoding of every coefficient, which libjpeg "
        "cannot skip: for a 3-4 MB photo that floor is most of what is left (about 35 ms "
        "on this CPU), so a full decode is about 2x slower here, not 4x. Smaller files (the same "
        "pixels, less detail) gain more; phones' JPEGs sit near this benchmark's size.",
        "- Thread spinning (`IMGCLF_MODEL_SPINNING`, off by default) lets ONNX Runtime's "
        "threads busy-wait between the layers of a call, and stops them when the call returns "
        "(`session.force_spinning_stop`). Alone, a call is as fast or faster with it; beside "
        "a decoding thread the model is slower with it (the table): the spinning threads hold "
        "the cores the decoding needs. The service spreads a call over every core only when "
        "one lane is busy, and there spinning took 0-3.5 ms off a lone request but doubled the "
        "p99 of an open loop at 50-88 requests/s (the next request waits to be parsed and "
        "decoded while the call spins): the default is off.",
        "- Lanes: a model call spread over every core waits at each layer for its slowest "
        "thread, and pays to wake the others; while one lane decodes, the call has fewer cores "
        "than threads. One lane per core, each decoding its batch and running the model on "
        "one thread, keeps every core busy at a lower CPU cost per image: that is how the "
        "batching worker runs under load. A lone job still gets every thread (lowest latency).",
        "",
    ]
    return "\n".join(lines)


def write_section(section: str, path: Path = DOCS, heading: str = "## Model") -> None:
    """Replace the section under ``heading`` of the benchmarks page (others are kept)."""
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section.rstrip() + "\n\n", text, count=1)
    else:
        text = text.rstrip() + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip() + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help="print, do not update the docs")
    parser.add_argument("--budget", type=float, default=1.5, help="seconds per measurement")
    parser.add_argument(
        "--repository", type=Path, default=ROOT / "data" / "models", help="for FP32/INT8/Lite2"
    )
    parser.add_argument("--models-only", action="store_true", help="FP32/INT8/Lite2 only")
    args = parser.parse_args()
    settings = Settings()
    if args.models_only or all(
        (args.repository / name / "1" / "bundle.json").exists() for name in compare_models.MODELS
    ):
        print("FP32 vs INT8 vs Lite2...", file=sys.stderr)
        threads = settings.resolved_model_threads
        models = compare_models.run(args.repository, threads, 2 * args.budget)
        print(models)
        if not args.no_write:
            write_section(models, DOCS, compare_models.HEADING)
        if args.models_only:
            return
    default_dir = ROOT / "data" / "models" / "efficientnet-lite0" / "1"
    model_dir = Path(os.environ.get("IMGCLF_MODEL_DIR") or default_dir)
    bundle = load_bundle(model_dir)
    threads = settings.resolved_model_threads
    load_start = os.getloadavg()[0]

    print(f"bundle {bundle.model_id} at {model_dir}, {threads} threads", file=sys.stderr)
    print("inference throughput...", file=sys.stderr)
    ort, eager = inference_throughput(bundle, threads, args.budget)
    print("decode costs...", file=sys.stderr)
    decodes = decode_costs(bundle, args.budget)
    print("thread spinning...", file=sys.stderr)
    spins = spinning_costs(bundle, threads, args.budget)
    print("lanes...", file=sys.stderr)
    lanes = lane_costs(bundle, threads, args.budget)
    print("memory...", file=sys.stderr)
    rss = peak_rss_mb(model_dir, threads)

    section = report(
        (load_start, os.getloadavg()[0]), threads, ort, eager, decodes, spins, lanes, rss
    )
    print(section)
    if not args.no_write:
        write_section(section)
        print(f"written to {DOCS}", file=sys.stderr)


if __name__ == "__main__":
    main()
