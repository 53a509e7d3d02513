"""Multi-process training helpers: DeepSpeed on CPU (tests, smoke script) and ZeRO checkpoint consolidation."""

from pvllm.distributed.consolidate import consolidate_zero_checkpoint, find_zero_tag

__all__ = ["consolidate_zero_checkpoint", "find_zero_tag"]
