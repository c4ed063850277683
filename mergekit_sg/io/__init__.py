"""Checkpoint I/O: references, lazy readers, the streaming safetensors writer, side files, cards."""
