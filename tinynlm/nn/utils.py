"""``tinynlm.nn.utils``: gradient clipping and, as ``utils.rnn``, packed sequences — the places
PyTorch users look for them.

>>> import tinynlm as tn
>>> w = tn.ones(3, requires_grad=True)
>>> (w * 4).sum().backward()
>>> round(tn.nn.utils.clip_grad_norm_([w], max_norm=1.0).item(), 3)
6.928
>>> packed = tn.nn.utils.rnn.pack_padded_sequence(tn.ones(4, 2, 3), [4, 2])
"""

from ..optim.clip import clip_grad_norm_, clip_grad_value_  # noqa: F401
from . import packing as rnn  # noqa: F401
