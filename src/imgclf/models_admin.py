"""`imgclf models`: list the served models and swap a live version, through the running API
(its admin routes), so that every API process and worker learns of it the way it always does.

Only the standard library here: the command works from any install of the package.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

# A promotion waits while the workers load and warm the version.
PROMOTE_TIMEOUT_S = 180


class AdminCallError(RuntimeError):
    """The API refused or could not be reached; the message says which and why."""


def _call(
    method: str,
    url: str,
    *,
    token: str | None = None,
    form: dict[str, str] | None = None,
    body: dict[str, Any] | None = None,
    timeout_s: float = 30,
) -> Any:
    headers = {"Accept": "application/json"}
    data = None
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    elif body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        try:
            detail = json.loads(error.read()).get("detail", error.reason)
        except (ValueError, AttributeError):
            detail = error.reason
        raise AdminCallError(f"{method} {url}: {error.code} {detail}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        raise AdminCallError(f"cannot reach the API at {url}: {error}") from None


def login(api_url: str, email: str, password: str) -> str:
    answer = _call("POST", f"{api_url}/login", form={"username": email, "password": password})
    return str(answer["access_token"])


def list_models(api_url: str, token: str) -> list[dict[str, Any]]:
    models: list[dict[str, Any]] = _call("GET", f"{api_url}/models", token=token)
    return models


def promote(api_url: str, token: str, name: str, version: int) -> dict[str, Any]:
    quoted = urllib.parse.quote(name, safe="")
    answer: dict[str, Any] = _call(
        "PUT",
        f"{api_url}/models/{quoted}/live",
        token=token,
        body={"version": version},
        timeout_s=PROMOTE_TIMEOUT_S,
    )
    return answer


def set_shadow(
    api_url: str, token: str, name: str, candidate: str, fraction: float
) -> dict[str, Any]:
    answer: dict[str, Any] = _call(
        "PUT",
        f"{api_url}/models/{urllib.parse.quote(name, safe='')}/shadow",
        token=token,
        body={"candidate": candidate, "fraction": fraction},
    )
    return answer


def stop_shadow(api_url: str, token: str, name: str) -> None:
    _call("DELETE", f"{api_url}/models/{urllib.parse.quote(name, safe='')}/shadow", token=token)


def read_shadow(api_url: str, token: str, name: str, days: int) -> dict[str, Any]:
    quoted = urllib.parse.quote(name, safe="")
    answer: dict[str, Any] = _call(
        "GET", f"{api_url}/models/{quoted}/shadow?days={days}", token=token
    )
    return answer


def describe_shadow(report: dict[str, Any]) -> list[str]:
    """The setting, then one line per pair of versions compared, for a person."""
    setting = (
        f"{report['model']}: shadow {report['candidate']} on {report['fraction']:.0%} of uploads"
        if report.get("candidate")
        else f"{report['model']}: no shadow set"
    )
    lines = [setting]
    for pair in report.get("pairs", []):
        agreement = pair["top1_agreement"]
        low, high = agreement["interval"]
        lines.append(
            f"  {pair['live']} vs {pair['candidate']}, last {report['days']} days: "
            f"{pair['comparisons']} compared, top-1 agreement {agreement['share']:.1%} "
            f"(95% {low:.1%}-{high:.1%}), top-5 overlap {pair['top5_overlap']['mean']:.2f}/5, "
            f"score difference {pair['score_difference']['mean']:+.4f}, latency "
            f"{pair['live_latency_ms']['mean']:.0f} ms live, "
            f"{pair['candidate_latency_ms']['mean']:.0f} ms candidate"
        )
    return lines


def describe(model: dict[str, Any]) -> str:
    """One line per model, for a person."""
    accuracy = model.get("accuracy")
    top1 = f"{accuracy * 100:.1f}% top-1" if isinstance(accuracy, float) else "top-1 unknown"
    default = " (default)" if model.get("default") else ""
    versions = ", ".join(str(v) for v in model.get("versions", []))
    return (
        f"{model['live']}{default}: versions {versions}; {model['precision']}, "
        f"{model['input_size']} px, {top1}; {model['workers']} workers, "
        f"{model['queue_depth']} waiting"
    )
