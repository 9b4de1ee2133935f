"""Kafka adapters: the Faust app and its agents, topics, compacted feeds, the embedded broker."""
