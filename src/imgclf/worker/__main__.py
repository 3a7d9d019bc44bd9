"""`python -m imgclf.worker`: one worker process, as started by `imgclf worker --processes N`."""

from imgclf.worker.main import main

main()
