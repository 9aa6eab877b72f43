"""``tinynlm.models``: the language models, GPT and a recurrent one (LSTM, GRU or RNN), with
their shared generation and sampling.

>>> import tinynlm as tn
>>> from tinynlm.models import GPT, GPTConfig
>>> model = GPT(GPTConfig(vocab_size=10, block_size=16, n_layer=1, n_head=2, n_embd=8))
>>> model.generate(tn.tensor([[1, 2, 3]]), max_new_tokens=4, temperature=0).shape
(1, 7)
"""

from .gpt import GPT, GPTConfig, KVCache
from .language_model import LanguageModel
from .rnn_lm import RNNLanguageModel, RNNLMConfig
from .sampling import Sampler
from .seq2seq import AttentionRNNSeq2Seq, Seq2SeqModel, TransformerSeq2Seq

__all__ = ["GPT", "GPTConfig", "KVCache", "LanguageModel", "RNNLMConfig", "RNNLanguageModel",
           "Sampler"]
