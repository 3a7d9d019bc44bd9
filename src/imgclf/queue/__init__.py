"""How a job reaches a model worker and its answer comes back: in-process or through Redis."""
