"""``tinynlm.nn``: modules, layers, losses and initialisation, with PyTorch's names."""

from . import functional, init
from .layers import (GELU, Bilinear, Dropout, Embedding, Flatten, Identity, LayerNorm, Linear,
                     LogSoftmax, ReLU, RMSNorm, Sigmoid, SiLU, Softmax, Tanh)
from .losses import BCEWithLogitsLoss, CrossEntropyLoss, L1Loss, MSELoss, NLLLoss
from .module import Module, ModuleDict, ModuleList, Parameter, Sequential
