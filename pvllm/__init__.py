"""pvllm: Personalized Video Comment Generation."""
__version__ = "0.1.0"
