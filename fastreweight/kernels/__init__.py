"""Triton kernels of fastreweight (the ``"triton"`` backend).

One module per op, each opening with the math and the tiling:

* ``pairwise``  — streamed pairwise class similarity (feature / gradient kernel, up to 4 layers,
  centering in registers, cosine row scales, segmented class aggregation);
* ``prototype`` — B-side kernels of the prototype strategy;
* ``epilogue``  — the FBR row-shift / label-signed score and the clipped Reweighter update;
* ``backend``   — launchers and the backend interface of ``fastreweight/backends.py``;
* ``utils``     — helpers shared by the launchers (a leaf module).

Importing this package needs ``triton``; ``fastreweight`` itself imports it lazily.
"""
