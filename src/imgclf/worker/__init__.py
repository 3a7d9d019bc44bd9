"""Model workers: the batching loop, run in a thread of `imgclf serve` or in `imgclf worker`."""
