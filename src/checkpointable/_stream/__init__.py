"""Private helpers of `checkpointable.stream`: argument checks and the progress bar."""
