"""The classifier and nothing else: bundle (:mod:`.bundle`), image checks (:mod:`.images`),
preprocessing (:mod:`.preprocessing`), the ONNX Runtime session (:mod:`.classifier`).

Each name is imported from its own module. ONNX Runtime is imported when a
:class:`~imgclf.model.classifier.Classifier` is built, and torch only by :mod:`.export`.
"""
