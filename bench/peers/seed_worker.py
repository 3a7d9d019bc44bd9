"""The seed's design, model side: take one job from the Redis list, classify it, store the answer
for the API to find; when the list is empty, look again 50 ms later.

    PEER_REDIS_URL=redis://... PEER_MODEL_DIR=... python seed_worker.py
"""

from __future__ import annotations

import io
import json
import os
import time

from peer_model import PeerModel
from PIL import Image
from redis import Redis

QUEUE = "seed:jobs"
POLL_S = 0.05


def main() -> None:
    redis = Redis.from_url(os.environ["PEER_REDIS_URL"])
    model = PeerModel.from_env()
    while True:
        job = redis.lpop(QUEUE)
        if job is None:
            time.sleep(POLL_S)
            continue
        job_id, _, data = job.partition(b" ")
        try:
            answer = model.classify([Image.open(io.BytesIO(data))])[0]
        except Exception as error:  # a bad upload fails its own job, not the worker
            answer = {"detail": f"The image could not be classified: {error}"}
        redis.set(f"seed:answer:{job_id.decode()}", json.dumps(answer), ex=60)


if __name__ == "__main__":
    main()
