"""The one worker runtime: processes and threads, the parent watch, typed messages, death
reports, shutdown. Used by the iterators' `PrefetchIterator` and `ParallelMapIterator` and by
`StatefulDataLoader`; it imports no component (and no torch), so a spawn worker starts fast."""
