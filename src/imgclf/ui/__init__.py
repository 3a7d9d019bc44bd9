"""The Streamlit UI and its API client. It knows the API only over HTTP (``IMGCLF_API_URL``)."""
