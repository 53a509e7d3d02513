"""Comment generators: one class per system, all behind ``GENERATORS`` (see base.py)."""

from pvllm.generators.base import GENERATORS, GenerationRequest, GenerationResult, Generator

__all__ = ["GENERATORS", "GenerationRequest", "GenerationResult", "Generator"]
