"""BentoML's adaptive batching over the same model (one worker process, batches of up to 16):

    PEER_MODEL_DIR=... bentoml serve bentoml_service:ImageClassifier --port 3000

POST /classify takes a multipart upload in the field ``file``, as imgclf does; each request is
a batch of one, which BentoML's dispatcher merges with the others waiting.
"""

from typing import Any

import bentoml
from peer_model import PeerModel
from PIL.Image import Image


@bentoml.service(workers=1, logging={"access": {"enabled": False}})
class ImageClassifier:
    def __init__(self) -> None:
        self.model = PeerModel.from_env()

    @bentoml.api(batchable=True, max_batch_size=16)
    def classify(self, file: list[Image]) -> list[dict[str, Any]]:
        return self.model.classify(file)
