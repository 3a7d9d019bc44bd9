"""The report's headline and analysis, each sentence chosen by comparing the run's numbers.

A closed-loop Locust user asks for one request per (pause + latency), so U users would ask an
idle service for U / (pause + the 1-user latency) requests/s. A configuration is *saturated*
from the first number of users that got under 80% of that: the users are waiting on the
service. Only saturated configurations say anything about capacity; below saturation the
throughput is simply what the users asked for, so capacity comparisons (workers, batching,
modes) are made only between saturated runs. A difference under 10% is "no clear difference"
(windows of 15-40 s on a machine that also runs Locust vary by about that much); the cores are
"busy" above 85% of their capacity, and other processes "compete" above 25% of it.
"""

from __future__ import annotations

from typing import Any

from stress_test.runs import SATURATED, Runs, n_users, predict_ms, predict_rps

SAME = 0.10
BUSY = 0.85
COMPETING = 0.25


def _span(low: float, high: float) -> str:
    """'95%' or '90-97%' for shares of capacity."""
    low_text, high_text = f"{100 * low:.0f}", f"{100 * high:.0f}"
    return f"{low_text}%" if low_text == high_text else f"{low_text}-{high_text}%"


def _change(new: float, old: float) -> str:
    return f"{100 * (new / old - 1):+.0f}%" if old else "n/a"


def _compare(new: float, old: float) -> str:
    """'raised', 'lowered' or 'made no clear difference to' (throughput)."""
    if old and new >= (1 + SAME) * old:
        return "raised"
    if old and new <= (1 - SAME) * old:
        return "lowered"
    return "made no clear difference to"


def competition(compared: list[dict[str, Any]]) -> str:
    """A caveat when other processes took a real share of the cores in any compared window."""
    worst = max(compared, key=lambda r: _capacity_share(r, "others"))
    share = _capacity_share(worst, "others")
    if share <= COMPETING:
        return ""
    return (
        f" Other processes took up to {100 * share:.0f}% of the cores during these windows, "
        "so a difference of this size may be theirs rather than the configurations'."
    )


def _worker_cpu(run: dict[str, Any]) -> float:
    processes = run["cpu"]["processes"]
    return sum(v for k, v in processes.items() if k.startswith("worker ") and k[-1].isdigit())


def _capacity_share(run: dict[str, Any], key: str) -> float:
    return float(run["cpu"][key]) / (100 * run["cpu"]["cores"])


def _redis_by_workers(runs: Runs) -> dict[int, str]:
    slugs = {w: runs.find("redis", w) for w in (1, 2, 4)}
    return {w: s for w, s in slugs.items() if s}


def _workers(runs: Runs) -> tuple[list[str], bool]:
    """Sentences on 1/2/4 Redis workers, and whether the data show the cores to be the limit."""
    present = _redis_by_workers(runs)
    if len(present) < 2:
        return [], False
    unsaturated = [w for w, s in present.items() if not runs.saturated(s)]
    if unsaturated:
        listing = " and ".join(str(w) for w in unsaturated)
        return [
            f"With {listing} worker(s) the service did not saturate in this run, so throughput "
            "there is what the users asked for, not capacity: the run cannot say what more "
            "workers buy."
        ], False
    peaks = {w: runs.peak(s) for w, s in present.items()}
    rates = {w: predict_rps(p) for w, p in peaks.items()}
    listing = ", ".join(f"{rates[w]:.1f} with {w}" for w in rates)
    flat = max(rates.values()) <= (1 + SAME) * min(rates.values())
    busy = [_capacity_share(p, "machine") for p in peaks.values()]
    others = [_capacity_share(p, "others") for p in peaks.values()]
    cores = next(iter(peaks.values()))["cpu"]["cores"]
    busy_text = _span(min(busy), max(busy))
    if max(others) > COMPETING:
        return [
            f"Saturated peaks of {listing} worker(s) (predictions/s, batch 16); the cores were "
            f"{busy_text} busy, but other processes on this shared machine took up to "
            f"{100 * max(others):.0f}% of them, so this run can neither rank the worker counts "
            "nor separate the service's own limit from that competition."
        ], False
    sentences = [
        (
            "More workers did not raise throughput"
            if flat
            else "Throughput changed with the number of workers"
        )
        + f": saturated peaks of {listing} worker(s) (predictions/s, batch 16)."
    ]
    cores_limit = False
    if min(busy) >= BUSY:
        cores_limit = True
        sentences.append(
            f"At those peaks the {cores} cores were {busy_text} busy, nearly all with this test "
            "(the service and Locust), so "
            + (
                f"the {cores} cores, not the number of workers, were the limit: another worker "
                "process only splits the same cores."
                if flat
                else "the gain stopped once the cores were full."
            )
        )
    else:
        sentences.append(
            f"The cores were not full at those peaks ({busy_text} of capacity), so CPU alone "
            "does not explain where throughput stopped; see the queue wait and latency columns."
        )
    one = _worker_cpu(peaks[min(peaks)])
    if one > 100:
        sentences.append(
            f"A single worker process already used {one:.0f}% of a core (ONNX Runtime runs a "
            "thread per core and decoding has its own threads)."
        )
    return sentences, cores_limit and flat


def _batching(runs: Runs, settings: dict[str, Any]) -> list[str]:
    pairs = []
    for slug in runs.slugs:
        run = runs.of(slug)[0]
        other = runs.find(run["mode"], run["workers"], 1, run["cache"])
        if run["max_batch_size"] == 16 and other:
            pairs.append((slug, other))
    if not pairs:
        return [
            "This run had no batch-1 configuration to compare with; `make stress` runs each "
            "mode with batching on (max batch 16) and off (max batch 1)."
        ]
    sentences = []
    verdicts = []
    low_costs = []
    caveat = ""
    for on, off in pairs:
        low, top = runs.common(on, off)
        high_on, high_off = runs.pair(on, off, top)
        low_on, low_off = runs.pair(on, off, low)
        rate_on, rate_off = predict_rps(high_on), predict_rps(high_off)
        mean_batch = high_on["service"]["mean_batch_size"] or 0
        text = f"{runs.name(on).rsplit(', batch', 1)[0]}: at {n_users(top)} batches averaged "
        text += f"{mean_batch:.1f} images; "
        if runs.saturated(on, top) and runs.saturated(off, top):
            verdict = _compare(rate_on, rate_off)
            verdicts.append(verdict)
            text += (
                f"batching {verdict} throughput ({_change(rate_on, rate_off)}): "
                f"{rate_on:.1f} vs {rate_off:.1f} predictions/s"
            )
            caveat = competition([high_on, high_off])
        else:
            text += (
                f"not both saturated there, so throughput ({rate_on:.1f} vs {rate_off:.1f} "
                "predictions/s) is the users' demand"
            )
        p50_on, p50_off = predict_ms(low_on, "p50_ms"), predict_ms(low_off, "p50_ms")
        low_costs.append(p50_on - p50_off)
        text += (
            f", p95 {predict_ms(high_on):,.0f} vs {predict_ms(high_off):,.0f} ms. At "
            f"{n_users(low)}: batches of {low_on['service']['mean_batch_size'] or 0:.1f}, p50 "
            f"{p50_on:.0f} vs {p50_off:.0f} ms."
        )
        sentences.append(text)
    if caveat:
        sentences.append(caveat.strip())
    if verdicts:
        if len(set(verdicts)) == 1:
            sentences.append(
                f"Where both were saturated, batching {verdicts[0]} throughput in "
                f"{'every pair' if len(verdicts) > 1 else 'the pair'}."
            )
        else:
            sentences.append("Where both were saturated, batching's effect differed by pair.")
    wait = settings.get("max_batch_wait_ms", 0)
    if not wait:
        sentences.append(
            "With `max_batch_wait_ms` = 0 a batch takes whatever is already waiting and never "
            "waits for more, so a lone request is not held back for company"
            + (
                "; the 1-user p50s agree (within 10 ms)."
                if all(abs(c) <= 10 for c in low_costs)
                else "; the 1-user p50s above differ by more than 10 ms all the same, which "
                "batching itself cannot explain (short windows, a busy machine)."
            )
        )
    else:
        sentences.append(
            f"With `max_batch_wait_ms` = {wait:g} a lone request may wait up to {wait:g} ms "
            "for others to batch with; the 1-user p50s above include that."
        )
    return sentences


def _modes(runs: Runs) -> list[str]:
    embedded, redis = runs.find("embedded"), runs.find("redis", 1)
    if not (embedded and redis):
        return []
    _, top = runs.common(embedded, redis)
    e_top, r_top = runs.pair(embedded, redis, top)
    if runs.saturated(embedded) and runs.saturated(redis):
        e, r = predict_rps(runs.peak(embedded)), predict_rps(runs.peak(redis))
        ratio = r / e if e else 0.0
        verdict = "about the same as" if abs(ratio - 1) < SAME else f"{100 * ratio:.0f}% of"
        text = (
            f"Redis mode with one worker saturated at {r:.1f} predictions/s, {verdict} the "
            f"embedded mode's {e:.1f}"
        )
    else:
        text = (
            "Not both modes saturated, so their throughputs are the users' demand "
            f"(Redis {predict_rps(r_top):.1f}, embedded {predict_rps(e_top):.1f} predictions/s "
            f"at {n_users(top)})"
        )
    return [
        f"{text}; at {n_users(top)} prediction p95 was {predict_ms(r_top):,.0f} ms with Redis "
        f"against {predict_ms(e_top):,.0f} ms embedded. Redis mode adds a hop (redis-server "
        f"used {r_top['cpu']['processes'].get('redis', 0):.0f}% of a core at {n_users(top)}) and "
        "ships every image to the worker; it earns its place when workers and API processes "
        "run on more than one machine." + competition([runs.peak(embedded), runs.peak(redis)])
    ]


def _cache(runs: Runs) -> list[str]:
    sentences = []
    for slug in runs.slugs:
        run = runs.of(slug)[0]
        if not run["cache"]:
            continue
        on_peak = runs.peak(slug)
        ratio = on_peak["service"]["cache_hit_ratio"] or 0
        text = (
            f"{runs.name(slug)}: {100 * ratio:.0f}% of predictions at "
            f"{n_users(on_peak['users'])} came from the cache"
        )
        off = runs.find(run["mode"], run["workers"], run["max_batch_size"])
        if off:
            _, top = runs.common(slug, off)
            on_top, off_top = runs.pair(slug, off, top)
            text += (
                f"; at {n_users(top)} {predict_rps(on_top):.1f} predictions/s with p95 "
                f"{predict_ms(on_top):,.0f} ms, against {predict_rps(off_top):.1f} and "
                f"{predict_ms(off_top):,.0f} ms with the cache off"
            )
            if not (runs.saturated(slug, top) and runs.saturated(off, top)):
                text += " (not both saturated, so the rates are the users' demand)"
        sentences.append(text + ".")
    return sentences


def _locust_and_others(runs: Runs) -> list[str]:
    loudest = max(runs.runs, key=lambda r: r["cpu"]["processes"].get("locust", 0))
    locust = loudest["cpu"]["processes"].get("locust", 0)
    share = locust / loudest["cpu"]["machine"] if loudest["cpu"]["machine"] else 0
    others = [r["cpu"]["others"] for r in runs.runs]
    mean_others = sum(others) / len(others)
    sentences = [
        f"Locust itself used up to {locust:.0f}% of a core ({loudest['name']}, "
        f"{n_users(loudest['users'])}), {100 * share:.0f}% of the CPU in use then: CPU the service "
        "did not get. With the load generator on another machine the service would have that "
        "much more."
    ]
    if max(others) > 100 * COMPETING:
        sentences.append(
            f"Other processes on this machine used {mean_others:.0f}% of a core on average "
            f"during the measured windows (up to {max(others):.0f}%): the service competed with "
            "them, so these figures are lower and noisier than a quiet machine's."
        )
    else:
        sentences.append(
            f"Other processes used at most {max(others):.0f}% of a core: the machine was quiet."
        )
    return sentences


def _ranking(runs: Runs) -> tuple[str, str] | None:
    """(recommended, fastest) among the saturated cache-off configurations: the fastest, and
    the simplest within 10% of it (fewest workers, then batching on)."""
    saturated = [s for s in runs.slugs if not runs.of(s)[0]["cache"] and runs.saturated(s)]
    if not saturated:
        return None
    fastest = max(saturated, key=lambda s: predict_rps(runs.peak(s)))
    top = predict_rps(runs.peak(fastest))

    def simplicity(slug: str) -> tuple[int, int]:
        run = runs.of(slug)[0]
        return (run["workers"], 0 if run["max_batch_size"] == 16 else 1)

    close = [s for s in saturated if predict_rps(runs.peak(s)) >= (1 - SAME) * top]
    return min(close, key=simplicity), fastest


def headline(runs: Runs, env: dict[str, Any]) -> str:
    ranking = _ranking(runs)
    if ranking is None:
        best = max(runs.runs, key=predict_rps)
        return (
            f"On {env['cores']} cores ({env['cpu']}) no configuration saturated: the most "
            f"measured was **{predict_rps(best):.1f} predictions/s** ({best['rps']:.1f} requests/s "
            f"in all, prediction p95 {predict_ms(best):,.0f} ms) with {best['name']} at "
            f"{n_users(best['users'])}."
        )
    fastest = ranking[1]
    peak = runs.peak(fastest)
    text = (
        f"On {env['cores']} cores ({env['cpu']}) the service saturated at "
        f"**{predict_rps(peak):.1f} predictions/s** ({peak['rps']:.1f} requests/s in all, "
        f"prediction p95 {predict_ms(peak):,.0f} ms, {peak['failures']} failures) with "
        f"{runs.name(fastest)} at {n_users(peak['users'])}"
    )
    _, cores_limit = _workers(runs)
    if cores_limit:
        text += "; more Redis workers did not raise it, because the cores were the limit"
    return text + "."


def _saturation(runs: Runs) -> list[str]:
    lines = [
        "**Where it saturates.** Requests/s per number of users and (in brackets) the share "
        "of what as many users would ask of an idle service, U / (mean pause "
        f"{runs.think_time_s:g} s + the 1-user latency); under {100 * SATURATED:.0f}% the users "
        "are waiting on the service, which is saturated:",
        "",
    ]
    for slug in runs.slugs:
        series = runs.of(slug)
        phrases = [f"{r['rps']:.1f} at {r['users']} ({100 * runs.share(r):.0f}%)" for r in series]
        text = f"  - {runs.name(slug)}: " + ", ".join(phrases)
        saturated = runs.saturated_at(slug)
        if saturated is None:
            text += "; not saturated in this run."
        else:
            text += (
                f"; saturated from {n_users(saturated['users'])}, at "
                f"{predict_rps(runs.peak(slug)):.1f} predictions/s, the prediction p95 rising "
                f"from {predict_ms(series[0]):,.0f} ms at {n_users(series[0]['users'])} to "
                f"{predict_ms(saturated):,.0f} ms."
            )
        lines.append(text)
    return [*lines, ""]


def _outlook(runs: Runs, cores_limit: bool) -> str:
    ranking = _ranking(runs)
    reference = runs.peak(ranking[1]) if ranking else max(runs.runs, key=predict_rps)
    api = reference["cpu"]["processes"].get("api", 0)
    return (
        "**On a bigger machine or a GPU** (expectations, not measured here). "
        + (
            "Since the cores were the limit here, more cores should raise throughput roughly in "
            "proportion, with enough worker processes that their threads match the cores. "
            if cores_limit
            else "This run did not show the cores alone to be the limit, so how far more cores "
            "help is for a run on that machine to tell. "
        )
        + f"The API process used {api:.0f}% of a core at {reference['name']}, "
        f"{n_users(reference['users'])}; once it nears a full core, raise "
        "`IMGCLF_WEB_CONCURRENCY`. "
        "On a GPU a batch of 16 costs little more than one image, so batching should matter "
        "far more than on a CPU, and JPEG decoding, uploads and the API's own work become the "
        "limits."
    )


def _advice(runs: Runs, settings: dict[str, Any]) -> str:
    ranking = _ranking(runs)
    if ranking is None:
        return (
            "**Recommended settings.** No configuration saturated, so this run cannot rank them "
            "on capacity; every configuration it ran served every load it offered. Run "
            "`make stress` for a ranking."
        )
    recommended, fastest = ranking
    rec = runs.of(recommended)[0]
    text = (
        f"**Recommended settings** for a machine like this one: {runs.name(recommended)} "
        f"(saturated at {predict_rps(runs.peak(recommended)):.1f} predictions/s"
    )
    if recommended != fastest:
        text += (
            f"; the fastest, {runs.name(fastest)}, reached "
            f"{predict_rps(runs.peak(fastest)):.1f}, within {100 * SAME:.0f}%"
        )
    text += "), the simplest configuration within 10% of the fastest saturated one. "
    unsaturated = [s for s in runs.slugs if not runs.saturated(s) and not runs.of(s)[0]["cache"]]
    if unsaturated:
        text += (
            "Left out of that ranking because they did not saturate: "
            + ", ".join(runs.name(s) for s in unsaturated)
            + ". "
        )
    saturated_peaks = [runs.peak(s) for s in runs.slugs if runs.saturated(s)]
    worst = max(_capacity_share(r, "others") for r in saturated_peaks)
    if worst > COMPETING:
        text += (
            f"Other processes took up to {100 * worst:.0f}% of the cores during these windows, "
            "so treat this ranking as provisional. "
        )
    if rec["mode"] == "embedded":
        text += "Move to Redis workers when the model needs more than one machine. "
    text += (
        f"`IMGCLF_MAX_BATCH_SIZE={rec['max_batch_size']}`, "
        f"`IMGCLF_MAX_BATCH_WAIT_MS={settings['max_batch_wait_ms']:g}`. Past saturation more "
        "users only add latency, so size for the saturated rate, not for a number of users."
    )
    return text


def analyse(runs: Runs, env: dict[str, Any]) -> list[str]:
    paragraphs = _saturation(runs)
    workers, cores_limit = _workers(runs)
    if workers:
        paragraphs += ["**Workers and cores.** " + " ".join(workers), ""]
    batching = _batching(runs, env["settings"])
    paragraphs += ["**What batching buys, and costs.** " + " ".join(batching), ""]
    modes = _modes(runs)
    if modes:
        paragraphs += ["**Embedded vs Redis.** " + " ".join(modes), ""]
    cache = _cache(runs)
    if cache:
        paragraphs += ["**Cache.** " + " ".join(cache), ""]
    neighbours = _locust_and_others(runs)
    paragraphs += ["**The load generator and the neighbours.** " + " ".join(neighbours), ""]
    paragraphs += [_outlook(runs, cores_limit), "", _advice(runs, env["settings"])]
    return paragraphs
