"""``tinynlm.nn``: modules, layers, losses and initialisation, with PyTorch's names."""

from . import functional, init, utils
from .layers import (GELU, Bilinear, Dropout, Embedding, Flatten, Identity, LayerNorm, Linear,
                     LogSoftmax, ReLU, RMSNorm, Sigmoid, SiLU, Softmax, Tanh)
from .losses import BCEWithLogitsLoss, CrossEntropyLoss, L1Loss, MSELoss, NLLLoss
from .module import Module, ModuleDict, ModuleList, Parameter, Sequential
from .packing import PackedSequence, pack_padded_sequence, pad_packed_sequence
from .recurrent import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell
from .attention import AdditiveAttention, DotProductAttention, MultiheadAttention
from .positional import (LearnedPositionalEmbedding, RotaryPositionalEmbedding,
                         SinusoidalPositionalEncoding)
from .transformer import (Transformer, TransformerDecoder, TransformerDecoderLayer,
                          TransformerEncoder, TransformerEncoderLayer)
