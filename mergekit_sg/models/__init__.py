"""Live models: build a torch module from a checkpoint, and move it along the linear path."""
