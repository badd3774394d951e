"""torchdata's ``StatefulDataLoader``: a drop-in ``torch.utils.data.DataLoader`` that resumes exactly.

``from torchdata.stateful_dataloader import Stateful, StatefulDataLoader`` becomes
``from checkpointable.dataloader import Stateful, StatefulDataLoader``. `ShardedIterableDataset`
makes an iterable-style dataset of checkpointable shards, whose loader state loads with any
``num_workers``.
"""

from .._loader.loader import StatefulDataLoader
from .._loader.sharded import ShardedIterableDataset
from .._state import Stateful

__all__ = ["ShardedIterableDataset", "Stateful", "StatefulDataLoader"]
