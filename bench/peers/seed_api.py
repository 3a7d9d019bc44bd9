"""The seed's design, API side: FastAPI puts each upload on a Redis list, then asks Redis every
50 ms whether the worker has stored its answer.

    PEER_REDIS_URL=redis://... uvicorn seed_api:app --port 8000
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from typing import Any

from fastapi import FastAPI, HTTPException, UploadFile
from redis.asyncio import Redis

QUEUE = "seed:jobs"
POLL_S = 0.05
DEADLINE_S = 30.0

app = FastAPI()
redis = Redis.from_url(os.environ["PEER_REDIS_URL"])


@app.post("/model/predict")
async def predict(file: UploadFile) -> Any:
    job_id = uuid.uuid4().hex
    await redis.rpush(QUEUE, job_id.encode() + b" " + await file.read())
    for _ in range(int(DEADLINE_S / POLL_S)):
        answer = await redis.get(f"seed:answer:{job_id}")
        if answer is not None:
            await redis.delete(f"seed:answer:{job_id}")
            return json.loads(answer)
        await asyncio.sleep(POLL_S)
    raise HTTPException(504, "No answer from the model in time.")
