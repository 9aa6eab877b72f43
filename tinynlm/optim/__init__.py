"""Optimizers, learning-rate schedules and gradient clipping, with PyTorch's ``torch.optim`` API.

>>> import tinynlm as tn
>>> from tinynlm import optim
>>> w = tn.tensor([3.0], requires_grad=True)
>>> optimizer = optim.Adam([w], lr=0.1)
>>> scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=50, gamma=0.5)
>>> for _ in range(200):
...     optimizer.zero_grad()
...     ((w - 1.0) ** 2).sum().backward()
...     optimizer.step()
...     scheduler.step()
>>> round(w.item(), 2)
1.0
"""

from . import lr_scheduler
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .clip import clip_grad_norm_, clip_grad_value_
from .optimizer import Optimizer
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["Adagrad", "Adam", "AdamW", "Optimizer", "RMSprop", "SGD", "clip_grad_norm_",
           "clip_grad_value_", "lr_scheduler"]
