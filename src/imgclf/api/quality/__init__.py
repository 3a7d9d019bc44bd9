"""Quality from feedback: per model version, how often its users said it was right."""
