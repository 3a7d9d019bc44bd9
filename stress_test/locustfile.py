"""Locust users for imgclf: sign up and log in once, then classify photos, read the history,
send feedback and hit the index.

    locust -f stress_test/locustfile.py --host http://127.0.0.1:8000     # or IMGCLF_API_URL

Extra options (after Locust's own): ``--warmup-s`` resets the statistics that many seconds
after the last user has logged in, so the figures leave out the ramp-up, the log-ins and a
cold model (the warm-up's own totals go to ``<csv prefix>_warmup.json``); ``--measure-s``
then ends the run after that many measured seconds (``-t`` stays a safety cap);
``--think-time`` is each user's mean pause between tasks; ``--unique-share`` is the share of
uploads made unique (a new md5, so a cache miss) by a JPEG comment; ``--login admin`` uses the
development admin instead of a new account per user.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import gevent
from locust import FastHttpUser, events, task
from locust.env import Environment
from locust.exception import StopUser

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from stress_test.photos import load_photos, with_unique_comment

PHOTOS = load_photos()
ADMIN = ("admin@example.com", "admin")  # the development admin (IMGCLF_ENV=development)


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument(
        "--warmup-s", type=float, default=0.0, help="seconds after the last log-in left out"
    )
    parser.add_argument(
        "--measure-s", type=float, default=0.0, help="measured seconds after the warm-up, then quit"
    )
    parser.add_argument("--think-time", type=float, default=1.0, help="mean pause per user, s")
    parser.add_argument("--unique-share", type=float, default=0.5, help="uploads made unique")
    parser.add_argument("--login", choices=["signup", "admin"], default="signup")


# Users whose on_start (sign-up and log-in) has finished, successfully or not.
_users_started = [0]


@events.test_start.add_listener
def _schedule_warmup_end(environment: Environment, **_kwargs: Any) -> None:
    """Reset the statistics ``--warmup-s`` after every user has logged in (Argon2 makes log-ins
    costly, so a fixed warm-up would let them leak into the figures), then measure
    ``--measure-s`` and quit."""
    options, runner = environment.parsed_options, environment.runner
    if options is None or runner is None or (options.warmup_s <= 0 and options.measure_s <= 0):
        return

    def warm_up_then_measure() -> None:
        began = time.time()
        while _users_started[0] < options.num_users:
            gevent.sleep(0.1)
        logged_in_at = time.time()
        gevent.sleep(options.warmup_s)
        stats = runner.stats
        summary = {
            "started_at": began,
            "logins_done_s": round(logged_in_at - began, 2),
            "ended_at": time.time(),
            "users": runner.user_count,
            "requests": stats.total.num_requests,
            "failures": stats.total.num_failures,
            "errors": [
                {"name": e.name, "error": str(e.error), "occurrences": e.occurrences}
                for e in stats.errors.values()
            ],
        }
        stats.reset_all()
        if options.csv_prefix:
            Path(f"{options.csv_prefix}_warmup.json").write_text(json.dumps(summary, indent=1))
        if options.measure_s > 0:
            gevent.sleep(options.measure_s)
            runner.quit()

    gevent.spawn(warm_up_then_measure)


def _explain(response: Any) -> str:
    """The API's status and detail, as Locust lists it among the failures."""
    if not response.status_code:
        return f"no response: {response.error}"
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = (response.text or "")[:200]
    return f"{response.status_code}: {detail}"


class ImgclfUser(FastHttpUser):
    host = os.environ.get("IMGCLF_API_URL", "http://127.0.0.1:8000")
    # A 12 MP upload on a busy 2-core machine may take seconds; the API's own deadline is 10 s.
    network_timeout = 60.0
    connection_timeout = 60.0

    def wait_time(self) -> float:
        mean = self.environment.parsed_options.think_time if self.environment.parsed_options else 1
        return random.uniform(0.5 * mean, 1.5 * mean)

    def on_start(self) -> None:
        try:
            self._log_in()
        finally:
            _users_started[0] += 1

    def _log_in(self) -> None:
        options = self.environment.parsed_options
        self.unique_share = options.unique_share if options else 0.5
        self.boundary = uuid.uuid4().hex
        self.last_prediction: dict[str, Any] | None = None
        if options is not None and options.login == "admin":
            email, password = ADMIN
        else:
            email, password = f"stress-{uuid.uuid4().hex[:16]}@example.com", uuid.uuid4().hex
            account = {"name": "Stress test user", "email": email, "password": password}
            with self.client.post(
                "/user/", json=account, name="/user/ (sign up)", catch_response=True
            ) as response:
                signed_up = response.status_code == 201
                if not signed_up:
                    response.failure(_explain(response))
            if not signed_up:
                raise StopUser
        form = {"username": email, "password": password}
        token = None
        with self.client.post("/login", data=form, catch_response=True) as response:
            if response.status_code == 200:
                token = response.json()["access_token"]
            else:
                response.failure(_explain(response))
        if token is None:
            raise StopUser
        self.client.auth_header = f"Bearer {token}"

    def _get(self, path: str) -> None:
        with self.client.get(path, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(_explain(response))

    @task(1)
    def index(self) -> None:
        self._get("/")

    @task(8)
    def predict(self) -> None:
        name = random.choice(list(PHOTOS))
        content = PHOTOS[name]
        if random.random() < self.unique_share:
            content = with_unique_comment(content, uuid.uuid4().hex.encode())
        head = (
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        body = head + content + f"\r\n--{self.boundary}--\r\n".encode()
        headers = {"Content-Type": f"multipart/form-data; boundary={self.boundary}"}
        with self.client.post(
            "/model/predict", data=body, headers=headers, catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(_explain(response))
                return
            answer = response.json()
            if not answer.get("prediction") or not answer.get("prediction_id"):
                response.failure(f"200 without a prediction: {str(answer)[:200]}")
                return
            self.last_prediction = answer

    @task(2)
    def feedback(self) -> None:
        if self.last_prediction is None:
            self.predict()
            return
        last = self.last_prediction
        body = {
            "feedback": random.choice(["Correct, thanks.", "Wrong: it is my cat."]),
            "score": last["score"],
            "predicted_class": last["prediction"],
            "image_file_name": last["image_file_name"],
            "prediction_id": last["prediction_id"],
        }
        with self.client.post("/feedback", json=body, catch_response=True) as response:
            if response.status_code != 201:
                response.failure(_explain(response))

    @task(2)
    def history(self) -> None:
        self._get("/model/predictions")
