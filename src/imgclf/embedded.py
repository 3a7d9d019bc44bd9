"""The factory's former address, for launchers that still name it; use ``imgclf.serving``."""

from imgclf.serving import create_service_app  # noqa: F401
