"""Shard files as datasets: formats, storage, the window order and `ShardedDataset`."""
