"""The HTTP API: an app factory (`imgclf.api.app.create_app`) and one folder per feature."""
