"""Implementation of `checkpointable.iterators` (see that module)."""
