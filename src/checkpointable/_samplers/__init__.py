"""Implementation of `checkpointable.samplers` (helios' resumable samplers)."""
