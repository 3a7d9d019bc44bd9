"""Feedback: whether a prediction was right, kept beside it."""
