"""How a candidate's answer compares with the live version's, for one upload."""

from __future__ import annotations

from typing import Any

TopK = list[tuple[str, float]]


def comparison_row(
    model: str,
    live: str,
    candidate: str,
    live_top_k: TopK,
    candidate_top_k: TopK,
    live_latency_ms: float,
    candidate_latency_ms: float,
) -> dict[str, Any]:
    """The ``shadow_comparisons`` row: top-1 agreement, labels both top-5 lists hold, the
    candidate's top-1 score minus the live one's, and each side's latency."""
    (live_label, live_score), (candidate_label, candidate_score) = live_top_k[0], candidate_top_k[0]
    overlap = {label for label, _ in live_top_k[:5]} & {label for label, _ in candidate_top_k[:5]}
    return {
        "model": model,
        "live": live,
        "candidate": candidate,
        "agreed": live_label == candidate_label,
        "top5_overlap": len(overlap),
        "score_difference": candidate_score - live_score,
        "live_latency_ms": round(live_latency_ms, 3),
        "candidate_latency_ms": round(candidate_latency_ms, 3),
    }
