"""The implementation of `checkpointable.dataloader.StatefulDataLoader` (private modules)."""
