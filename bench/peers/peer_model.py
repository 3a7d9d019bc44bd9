"""What the peers run for a batch of images: the decode, preprocessing and model imgclf uses
(Pillow draft mode, shorter side to 256, centre crop 224, RGB, ``(x - 127) / 128``, ONNX Runtime),
written plainly, as a user of either design would. ONNX Runtime keeps its defaults (a call
spreads over every core) but for one: idle threads do not spin, as in imgclf. Spinning threads
took the seed's worker from 43 to 27 images/s on this shared machine, a session flag any user
can set, not a property of the serving design being compared.

The bundle folder comes from PEER_MODEL_DIR: bundle.json (sizes, mean, std), labels.json and
model.onnx, the files imgclf serves.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from PIL import Image


class PeerModel:
    def __init__(self, model_dir: Path) -> None:
        config = json.loads((model_dir / "bundle.json").read_text())
        self.size = int(config["input_size"])
        self.resize = int(config["resize"])
        self.mean = float(config["mean"])
        self.std = float(config["std"])
        labels = json.loads((model_dir / "labels.json").read_text())
        self.labels = [entry["name"] for entry in labels]
        options = ort.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            str(model_dir / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name

    @classmethod
    def from_env(cls) -> PeerModel:
        return cls(Path(os.environ["PEER_MODEL_DIR"]))

    def tensor(self, image: Image.Image) -> np.ndarray:
        image.draft("RGB", (self.resize, self.resize))
        image = image.convert("RGB")
        width, height = image.size
        scale = self.resize / min(width, height)
        image = image.resize(
            (max(self.size, round(width * scale)), max(self.size, round(height * scale))),
            Image.Resampling.BILINEAR,
        )
        left, top = (image.width - self.size) // 2, (image.height - self.size) // 2
        image = image.crop((left, top, left + self.size, top + self.size))
        array = (np.asarray(image, dtype=np.float32) - self.mean) / self.std
        return array.transpose(2, 0, 1)

    def classify(self, images: list[Image.Image]) -> list[dict[str, Any]]:
        """The best label and its probability for each image, from one model call."""
        batch = np.stack([self.tensor(image) for image in images])
        logits = self.session.run(None, {self.input_name: batch})[0]
        logits = logits - logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        return [
            {"prediction": self.labels[int(row.argmax())], "score": round(float(row.max()), 4)}
            for row in probabilities
        ]
