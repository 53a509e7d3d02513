"""Raw data collection: the YouTube Data API collector and an importer for existing comment dumps."""

from pvllm.data.collect.importer import import_comments
from pvllm.data.collect.youtube import CollectConfig, QuotaStop, YouTubeCollector

__all__ = ["CollectConfig", "QuotaStop", "YouTubeCollector", "import_comments"]
