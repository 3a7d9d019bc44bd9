"""History: a user's predictions a page at a time, each with its image and latest feedback."""
