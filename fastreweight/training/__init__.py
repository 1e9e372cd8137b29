"""Training on noisy labels with a small clean subset, over the user's own data pipeline.

::

    from fastreweight.training import CleanSet, FBR, Trainer, with_index

    loader = DataLoader(with_index(train_set), batch_size=128, shuffle=True)   # (x, y, idx) batches
    trainer = Trainer(model, optimizer, FBR(whiten="auto", whiten_every=10), CleanSet(clean_x, clean_y))
    result = trainer.fit(loader, epochs=30, eval_loader=test_loader)

The methods (``ERM``, ``FBR``, ``FBRPaper``, ``MetaDirection``, ``L2R``) own their options and state;
the loop only iterates, steps the optimiser and records.  A user's own loop calls the same method
objects (``method.bind(...)``, ``begin_epoch``, ``loss``, ``end_epoch``).
"""
from .batches import IndexedDataset, TensorLoader, with_index
from .checkpoint import load_checkpoint, save_checkpoint
from .clean import CleanSet
from .loop import Trainer
from .methods import (ERM, FBR, L2R, METHODS, FBRPaper, MetaDirection, Method, NeighbourRelabel, RunContext,
                      make_method)
from .parallel import Distributed, SingleProcess
from .precision import Precision
from .records import TrainResult
from .warmup import Warmup

__all__ = [
    "Trainer", "TrainResult", "CleanSet", "with_index", "IndexedDataset", "TensorLoader",
    "Method", "RunContext", "ERM", "FBR", "FBRPaper", "MetaDirection", "L2R", "NeighbourRelabel", "METHODS", "make_method",
    "Warmup", "Precision", "SingleProcess", "Distributed", "save_checkpoint", "load_checkpoint",
]
