"""gpv-train's library: data, the training loop, GGUF export."""
