"""Shadow comparisons: a candidate version answers a share of live uploads, off the request path."""
