"""imgclf beside other serving designs: the same load in the same run (`make bench-peers`).

    python bench/peers.py                 # 3 rounds of 20 s per design; writes "## Peers"
    python bench/peers.py --seconds 5 --rounds 1 --no-write

Every design serves the same model file with the same decode and preprocessing, one at a time on
this machine, each loaded by wrk with 32 connections POSTing the same 640x480 JPEG:

- imgclf, embedded (`imgclf serve`, max batch 16);
- BentoML's adaptive batching, max batch 16 (bench/peers/bentoml_service.py);
- the seed's design: FastAPI puts each upload on a Redis list and polls Redis every 50 ms for
  the answer; one worker takes one job at a time, polling the list every 50 ms when it is empty
  (bench/peers/seed_api.py, seed_worker.py), on the packaged redis-server.

The peers run in throwaway virtual environments under the system temp folder (reused between
runs), never in the project's: BentoML pinned below, and ONNX Runtime, Pillow, NumPy, FastAPI,
uvicorn and redis-py at the versions imgclf runs on here. Each peer must give the imgclf label
for the image before it is loaded. Rounds alternate the designs; ratios are per round.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import date
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import MODEL_DIR, cores, photo_640x480
from service import cpu_model, running_service
from wrkload import Upload, WrkResult, ensure_wrk, run_wrk, wrk_command_line

from imgclf.launcher import Child, http_get, wait_until
from imgclf.localservers import RedisServer, free_port, port_open
from imgclf.model.bundle import load_bundle
from imgclf.model.classifier import Classifier
from imgclf.model.images import ImageLimits

ROOT = Path(__file__).resolve().parents[1]
PEERS = Path(__file__).resolve().parent / "peers"
VENVS = Path(tempfile.gettempdir()) / "imgclf-peers"
BENTOML_VERSION = "1.4.40"
DEFAULT_SECONDS = 20.0
DEFAULT_ROUNDS = 3
README_HEADLINE = "Beside other serving designs"

IMGCLF = "imgclf, embedded, max batch 16"
BENTOML = f"BentoML {BENTOML_VERSION}, adaptive batching, max batch 16"
SEED = "the seed's design: FastAPI + Redis list, worker polls every 50 ms"


def same_as_imgclf(*packages: str) -> list[str]:
    """Pins to the versions installed beside imgclf, so that only the serving design differs."""
    return [f"{package}=={metadata.version(package.split('[')[0])}" for package in packages]


def peer_venv(name: str, requirements: list[str]) -> Path:
    """A virtual environment with exactly these requirements, made once and then reused."""
    path = VENVS / name
    stamp = path / "imgclf-peer-requirements.txt"
    wanted = "\n".join(requirements) + "\n"
    if stamp.exists() and stamp.read_text() == wanted:
        return path
    if path.exists():
        shutil.rmtree(path)
    print(f"creating {path}: pip install {' '.join(requirements)}", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    pip = [path / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, *requirements], check=True)
    stamp.write_text(wanted)
    return path


def peer_env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PEER_MODEL_DIR": str(MODEL_DIR),
        "BENTOML_DO_NOT_TRACK": "true",
        "PYTHONPATH": "",  # the peers must not see imgclf's sources
        **extra,
    }


@contextmanager
def started(name: str, command: list[str], env: dict[str, str], log: Path) -> Iterator[Child]:
    """Run a peer's process in its own process group; stop the whole group afterwards."""
    child = Child(name, command, env, log, cwd=PEERS).start()
    try:
        yield child
    finally:
        child.stop()


def log_file(name: str) -> Path:
    (VENVS / "logs").mkdir(parents=True, exist_ok=True)
    return VENVS / "logs" / f"{name}.log"


@contextmanager
def imgclf_peer() -> Iterator[tuple[str, str]]:
    with running_service(batch=16) as (url, token):
        yield url, f"Bearer {token}"


@contextmanager
def bentoml_peer(venv: Path) -> Iterator[tuple[str, str]]:
    port = free_port()
    path = log_file("bentoml")
    command = [
        str(venv / "bin" / "bentoml"),
        "serve",
        "bentoml_service:ImageClassifier",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with started("bentoml", command, peer_env(), path) as child:
        ready = f"http://127.0.0.1:{port}/readyz"
        wait_until(lambda: http_get(ready)[0] == 200, f"{ready} (see {path})", 120, [child])
        yield f"http://127.0.0.1:{port}/classify", ""


@contextmanager
def seed_peer(venv: Path) -> Iterator[tuple[str, str]]:
    port = free_port()
    path = log_file("seed")
    redis = RedisServer().start()
    env = peer_env(PEER_REDIS_URL=redis.url)
    api = [
        str(venv / "bin" / "uvicorn"),
        "seed_api:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
    ]
    worker = [str(venv / "bin" / "python"), "seed_worker.py"]
    try:
        with started("api", api, env, path) as server, started("worker", worker, env, path):
            wait_until(lambda: port_open(port), f"the seed's API (see {path})", 60, [server])
            yield f"http://127.0.0.1:{port}/model/predict", ""
    finally:
        redis.stop()


def answer_label(url: str, upload: Upload) -> str:
    """The label a design gives the image, from one request with the benchmark's body."""
    headers = {"Content-Type": upload.content_type}
    if upload.authorization:
        headers["Authorization"] = upload.authorization
    request = urllib.request.Request(url, data=upload.body, headers=headers)  # noqa: S310
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - loopback
        answer = json.loads(response.read())
    if isinstance(answer, list):  # BentoML answers a batch of one with a list of one
        answer = answer[0]
    return str(answer["prediction"])


@dataclass
class Runs:
    results: list[WrkResult] = field(default_factory=list)
    vs_imgclf: list[float] = field(default_factory=list)

    def median(self, name: str) -> float:
        return statistics.median(getattr(run, name) for run in self.results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="per design run")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    ensure_wrk()
    shared = same_as_imgclf("onnxruntime", "pillow", "numpy")
    bentoml_venv = peer_venv("bentoml", [f"bentoml=={BENTOML_VERSION}", *shared])
    seed_venv = peer_venv(
        "seed",
        [*same_as_imgclf("fastapi", "uvicorn[standard]", "python-multipart", "redis"), *shared],
    )
    installed = subprocess.run(
        [bentoml_venv / "bin" / "python", "-c", "import bentoml; print(bentoml.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    print(f"BentoML {installed} in {bentoml_venv}; the seed's design in {seed_venv}", flush=True)

    image = photo_640x480()
    expected = Classifier(load_bundle(MODEL_DIR)).classify_bytes([image], ImageLimits())[0]
    assert isinstance(expected, list)
    label = expected[0].label
    upload = Upload.jpeg(image)
    designs: list[tuple[str, Callable[[], AbstractContextManager[tuple[str, str]]]]] = [
        (IMGCLF, imgclf_peer),
        (BENTOML, lambda: bentoml_peer(bentoml_venv)),
        (SEED, lambda: seed_peer(seed_venv)),
    ]
    runs: dict[str, Runs] = {name: Runs() for name, _ in designs}
    for round_number in range(args.rounds):
        print(f"round {round_number + 1}", flush=True)
        # Each round starts with another design, so that none always follows the same one.
        shift = round_number % len(designs)
        this_round: dict[str, WrkResult] = {}
        for name, start in designs[shift:] + designs[:shift]:
            with start() as (url, authorization):
                sent = replace(upload, authorization=authorization)
                answer = answer_label(url, sent)
                if answer != label:
                    sys.exit(f"{name} answered {answer!r} for the image; imgclf says {label!r}.")
                result = run_wrk(url, sent, connections=args.connections, seconds=args.seconds)
            this_round[name] = result
            runs[name].results.append(result)
            print(
                f"  {name}: {result.throughput:.1f} req/s, p50 {result.p50_ms:.1f} ms, p99 "
                f"{result.p99_ms:.1f} ms, {result.failures} failed, wrk CPU "
                f"{result.client_cpu_share:.1%} of a core ({answer})",
                flush=True,
            )
        for name, result in this_round.items():
            runs[name].vs_imgclf.append(result.throughput / this_round[IMGCLF].throughput)
    report(runs, label, installed, args)


def report(runs: dict[str, Runs], label: str, bentoml: str, args: argparse.Namespace) -> None:
    table = [
        "| design | req/s | p50 ms | p99 ms | p99/p50 | vs imgclf |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, figures in runs.items():
        table.append(
            f"| {name} | {figures.median('throughput'):.1f} | {figures.median('p50_ms'):.1f} "
            f"| {figures.median('p99_ms'):.1f} | {figures.median('tail_ratio'):.1f} "
            f"| {statistics.median(figures.vs_imgclf):.2f} |"
        )
    every_run = [run for figures in runs.values() for run in figures.results]
    shares = [run.client_cpu_share for run in every_run]
    seconds = max(1, round(args.seconds))
    commands = [
        f"- load: `{wrk_command_line(args.connections, seconds)}` after a 2 s warm-up "
        "(BODY: the multipart upload of the JPEG in the field `file`; TOKEN: imgclf's, sent to "
        "imgclf only; STAGGER_MS: the warm-up's median latency over the connections, so that "
        "they start spread as a steady stream has them, not all at once)",
        "- imgclf: `IMGCLF_MAX_BATCH_SIZE=16 IMGCLF_CACHE=false IMGCLF_ACCESS_LOG=false imgclf "
        "serve`, POST /model/predict",
        f"- BentoML {bentoml}: `bentoml serve bentoml_service:ImageClassifier --host 127.0.0.1 "
        "--port PORT` in bench/peers, POST /classify",
        "- the seed's design: the packaged `redis-server` (imgclf.localservers.RedisServer), "
        "`uvicorn seed_api:app --host 127.0.0.1 --port PORT --no-access-log` and "
        "`python seed_worker.py` in bench/peers, POST /model/predict",
    ]
    notes = [
        f"- every design answered `{label}` for the image before its load; wrk used "
        f"{statistics.median(shares):.1%} of one core in the median run, {max(shares):.1%} at "
        f"most; {sum(run.failures for run in every_run)} requests failed",
        "- imgclf checks a JWT on every request and records every prediction in SQLite; the "
        "peers check and record nothing. The peers' model calls spread over every core, with "
        "ONNX Runtime's idle threads not spinning (as in imgclf); imgclf runs a lane per core, as "
        "it ships, with the peers' max batch of 16 (it ships with 8, whose tail is shorter: see "
        "Service above).",
    ]
    text = "\n".join([*table, "", *notes, "", "Commands:", "", *commands])
    print("\n" + text)
    if args.no_write:
        return
    short = args.seconds < DEFAULT_SECONDS or args.rounds < DEFAULT_ROUNDS
    when = (
        f"**Short run** ({args.seconds:g} s per design, {args.rounds} "
        f"{'round' if args.rounds == 1 else 'rounds'}, on a busy "
        "shared machine): it shows the comparison runs, not what the designs serve; "
        "`make bench-peers` with its defaults measures."
        if short
        else f"Measured {date.today().isoformat()}"
    )
    section = (
        "## Peers\n\n"
        f"{when} On {cpu_model()}, {cores()} cores, Python {platform.python_version()}, by "
        f"`make bench-peers` (`bench/peers.py --seconds {args.seconds:g} --rounds "
        f"{args.rounds}`): each design in turn serves the same 640x480 JPEG with the same model "
        f"file to wrk's {args.connections} connections (closed loop) for {args.seconds:g} s "
        "after a 2 s warm-up; the designs take turns within each round, the table holds "
        "medians over the rounds, and each ratio is taken within a round.\n\n" + text + "\n"
    )
    write_section(section)
    write_headline(runs, short, args)


def write_section(section: str) -> None:
    path = ROOT / "docs" / "benchmarks.md"
    existing = path.read_text()
    before, found, after = existing.partition("## Peers\n")
    if not found:
        path.write_text(existing.rstrip() + "\n\n" + section)
        return
    rest = after.split("\n## ", 1)[1] if "\n## " in after else ""
    path.write_text(before.rstrip() + "\n\n" + section + ("\n## " + rest if rest else ""))


def write_headline(runs: dict[str, Runs], short: bool, args: argparse.Namespace) -> None:
    """One line in README.md, under the paragraph that points at docs/benchmarks.md."""
    imgclf, bentoml, seed = runs[IMGCLF], runs[BENTOML], runs[SEED]
    line = (
        f"{README_HEADLINE} ([peers](docs/benchmarks.md#peers), `make bench-peers`, wrk, "
        f"{args.connections} connections, same model and image): imgclf serves "
        f"{imgclf.median('throughput'):.0f} req/s at p99 {imgclf.median('p99_ms'):.0f} ms, "
        f"BentoML's adaptive batching {statistics.median(bentoml.vs_imgclf):.2f}x that (p99 "
        f"{bentoml.median('p99_ms'):.0f} ms), the seed's FastAPI + Redis list polled every 50 ms "
        f"{statistics.median(seed.vs_imgclf):.2f}x (p99 {seed.median('p99_ms'):.0f} ms)"
        + (" (short run, indicative only)." if short else ".")
    )
    path = ROOT / "README.md"
    lines = path.read_text().splitlines()
    at = next((i for i, text in enumerate(lines) if text.startswith(README_HEADLINE)), None)
    if at is not None:
        lines[at] = line
    else:
        anchor = next(i for i, text in enumerate(lines) if "(docs/benchmarks.md)" in text)
        lines[anchor + 1 : anchor + 1] = ["", line]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
