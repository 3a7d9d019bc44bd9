"""Models: what is served, which version is live, and swapping it."""
