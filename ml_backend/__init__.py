"""Label Studio ML backend: MiniGPT-v2 box suggestions in Label Studio, batch and interactive (see README)."""
