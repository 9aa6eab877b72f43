"""Data for language-model training: the corpus, tokenizers, and batches of token windows.

>>> from tinynlm.data import (CharTokenizer, RandomWindowBatcher, load_corpus,
...                           sequential_batches, split_train_val)
>>> text = load_corpus()
>>> tokenizer = CharTokenizer.from_text(text)
>>> train_ids, val_ids = split_train_val(tokenizer.encode(text), val_fraction=0.1)
>>> x, y = RandomWindowBatcher(train_ids, block_size=32, batch_size=4, seed=0).next_batch()
>>> x.shape
(4, 32)
>>> x_val, y_val = next(sequential_batches(val_ids, block_size=32, batch_size=4))
>>> tokenizer.decode(x_val[0]) == text[len(train_ids):len(train_ids) + 32]
True
"""

from .batching import RandomWindowBatcher, sequential_batches, split_train_val
from .corpus import load_corpus
from .tokenizers import (ByteTokenizer, CharTokenizer, Tokenizer, as_token_ids,
                         tokenizer_from_dict)

__all__ = ["ByteTokenizer", "CharTokenizer", "RandomWindowBatcher", "Tokenizer", "as_token_ids",
           "load_corpus", "sequential_batches", "split_train_val", "tokenizer_from_dict"]
