"""Turns feature statistics into a shard plan.

Stages (one module each): stats from click logs -> hash-size allocation -> unified tables ->
precision -> placement -> plan file. Pure Python + numpy + numba: this package never imports torch,
torchrec, fbgemm, grpc or embed_store (a test checks ``sys.modules``).
"""

__all__: list[str] = []
