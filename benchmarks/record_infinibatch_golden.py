"""Records infinibatch 0.1.1's outputs that test_seed_order.py compares ours with.

Run in the bench set-up, where the peers are installed (never in the test set-up):
    .venv/bin/python benchmarks/record_infinibatch_golden.py > tests/iterators/infinibatch_golden.json
"""

import json

from infinibatch import datasets
from infinibatch.iterators import (
    BlockwiseShuffleIterator,
    BucketedReadaheadBatchIterator,
    BufferedShuffleIterator,
    InfinitePermutationSourceIterator,
    NativeCheckpointableIterator,
    RandomIterator,
    SamplingRandomMapIterator,
    WindowedIterator,
)

out = {"_source": "infinibatch 0.1.1, benchmarks/record_infinibatch_golden.py"}


def take(it, n):
    r = []
    for _ in range(n):
        try:
            r.append(next(it))
        except StopIteration:
            break
    return r


out["perm_5_s7_k3_r1"] = take(
    InfinitePermutationSourceIterator(list(range(5)), seed=7, num_instances=3, instance_rank=1), 12
)
out["perm_4_s2"] = take(InfinitePermutationSourceIterator(list("abcd"), seed=2), 12)
out["perm_3_s1_k5_r4"] = take(
    InfinitePermutationSourceIterator(list(range(3)), seed=1, num_instances=5, instance_rank=4), 8
)
out["perm_noshuffle_k2_r1"] = take(
    InfinitePermutationSourceIterator(
        list(range(5)), shuffle=False, num_instances=2, instance_rank=1
    ),
    8,
)
out["buffered_20_b5_s3"] = list(
    BufferedShuffleIterator(NativeCheckpointableIterator(list(range(1, 21))), 5, seed=3)
)
out["blockwise_10_b4_s5"] = list(
    BlockwiseShuffleIterator(NativeCheckpointableIterator(list(range(10))), 4, seed=5)
)


def tf(r, x):
    return (x, r.randrange(100))


out["sampling_6_s9"] = [
    list(t)
    for t in SamplingRandomMapIterator(NativeCheckpointableIterator(list(range(6))), tf, seed=9)
]
out["bucketed"] = list(
    BucketedReadaheadBatchIterator(
        NativeCheckpointableIterator(["x" * ((i * 7) % 5 + 1) + str(i) for i in range(23)]),
        read_ahead=10,
        key=len,
        batch_size=3,
        seed=4,
    )
)
out["bucketed_boundary"] = list(
    BucketedReadaheadBatchIterator(
        NativeCheckpointableIterator([(i % 3, i) for i in range(17)]),
        read_ahead=8,
        key=lambda t: t[0],
        batch_size=lambda t: 2 + t[0],
        boundary_key=lambda t: t[0],
        seed=1,
    )
)
out["bucketed_noshuffle"] = list(
    BucketedReadaheadBatchIterator(
        NativeCheckpointableIterator(list(range(10))),
        read_ahead=5,
        key=None,
        batch_size=2,
        shuffle=False,
    )
)
out["windowed"] = [
    list(w) for w in WindowedIterator(NativeCheckpointableIterator(list(range(7))), 3)
]
out["random_s2"] = take(RandomIterator(seed=2), 3)
chunks = [[f"c{c}i{i}" for i in range(c + 2)] for c in range(5)]
out["chunked_train"] = take(
    datasets.chunked_dataset_iterator(
        chunks, iter, buffer_size=4, seed=11, prefetch=False, num_instances=2, instance_rank=0
    ),
    25,
)
out["chunked_train_windowed"] = take(
    datasets.chunked_dataset_iterator(
        chunks, iter, buffer_size=4, seed=11, use_windowed=True, prefetch=False
    ),
    25,
)
out["chunked_eval"] = take(
    datasets.chunked_dataset_iterator(
        chunks,
        iter,
        buffer_size=4,
        train=False,
        shuffle=False,
        prefetch=False,
        num_instances=2,
        instance_rank=1,
    ),
    25,
)
print(json.dumps(out))
