"""Tests of tinynlm.data: the corpus, the tokenizers and the batchers."""

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinynlm as tn
from tinynlm.data import (ByteTokenizer, CharTokenizer, RandomWindowBatcher, Tokenizer,
                          load_corpus, sequential_batches, split_train_val, tokenizer_from_dict)


@pytest.fixture(scope="module")
def corpus():
    return load_corpus()


# ---------------------------------------------------------------------- corpus
def test_default_corpus_is_python_documentation(corpus):
    from pydoc_data.topics import topics

    assert 400_000 < len(corpus) < 600_000
    assert "assert" in corpus and "lambda" in corpus
    first, second = sorted(topics)[:2]
    assert corpus.startswith(topics[first] + "\n" + topics[second] + "\n")
    assert corpus == load_corpus()


def test_corpus_from_file(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("héllo\nwörld", encoding="utf-8")
    assert load_corpus(path) == "héllo\nwörld"
    assert load_corpus(str(path)) == "héllo\nwörld"


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.txt"):
        load_corpus(tmp_path / "nothing.txt")


def test_directory_is_refused(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a directory"):
        load_corpus(tmp_path)


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.txt.*is empty"):
        load_corpus(path)


def test_invalid_utf8_names_the_byte_offset(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("abc".encode() + "é".encode("latin-1") + b"xyz")
    with pytest.raises(ValueError, match=r"latin1.txt.*not valid UTF-8.*0xe9 at byte offset 3"):
        load_corpus(path)


# ---------------------------------------------------------------------- tokenizers
def test_char_tokenizer_vocabulary_is_sorted_characters(corpus):
    tokenizer = CharTokenizer.from_text(corpus)
    assert tokenizer.characters == "".join(sorted(set(corpus)))
    assert tokenizer.vocab_size == len(set(corpus))


def test_char_tokenizer_round_trips_the_corpus(corpus):
    tokenizer = CharTokenizer.from_text(corpus)
    ids = tokenizer.encode(corpus)
    assert ids.dtype == np.int64 and ids.shape == (len(corpus),)
    assert ids.min() >= 0 and ids.max() < tokenizer.vocab_size
    decoded = tokenizer.decode(ids)
    same = decoded == corpus  # a plain flag: pytest's diff of two 465,000-character strings is slow
    assert same, f"the round trip differs from the corpus; lengths {len(decoded)}, {len(corpus)}"


def test_encoding_agrees_with_a_lookup_table():
    tokenizer = CharTokenizer("zay\u00e9\U0001f600")  # not in sorted order
    text = "ay\U0001f600z\u00e9a"
    lookup = {c: i for i, c in enumerate(tokenizer.characters)}
    assert tokenizer.encode(text).tolist() == [lookup[c] for c in text]


def test_decode_accepts_lists_arrays_and_tensors():
    tokenizer = CharTokenizer("abc")
    assert tokenizer.decode([2, 0]) == "ca"
    assert tokenizer.decode(np.array([2, 0], dtype=np.int32)) == "ca"
    assert tokenizer.decode(tn.tensor([2, 0])) == "ca"
    assert tokenizer.decode([]) == ""
    assert ByteTokenizer().decode(tn.tensor([104, 105])) == "hi"


def test_unknown_character_error_names_it_and_its_position():
    tokenizer = CharTokenizer.from_text("hello")
    with pytest.raises(ValueError, match=r"character 'x' at position 3 is not in the vocabulary"):
        tokenizer.encode("helxo")


def test_unknown_fallback_character():
    tokenizer = CharTokenizer.from_text("hello", unknown="~")
    assert tokenizer.characters == "ehlo~"
    assert tokenizer.decode(tokenizer.encode("help!")) == "hel~~"


def test_bad_vocabularies_are_refused():
    with pytest.raises(ValueError, match="'a' appears more than once"):
        CharTokenizer("aba")
    with pytest.raises(ValueError, match="non-empty"):
        CharTokenizer("")
    with pytest.raises(ValueError, match="unknown character '_' must be one of"):
        CharTokenizer("ab", unknown="_")


def test_decode_refuses_out_of_range_and_non_integer_ids():
    with pytest.raises(ValueError, match="token id 3 at position 1 is outside the vocabulary of 3"):
        CharTokenizer("abc").decode([0, 3])
    with pytest.raises(ValueError, match="token id -1 at position 0"):
        ByteTokenizer().decode([-1])
    with pytest.raises(TypeError, match="must be integers"):
        CharTokenizer("abc").decode([0.5])
    with pytest.raises(ValueError, match="1-D"):
        CharTokenizer("abc").decode([[0, 1]])


def test_byte_tokenizer_handles_any_text():
    tokenizer = ByteTokenizer()
    text = "naïve café — 日本語 😀"
    ids = tokenizer.encode(text)
    assert tokenizer.vocab_size == 256
    assert ids.dtype == np.int64 and ids.tolist() == list(text.encode("utf-8"))
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode(ids[:-1]) == text[:-1] + "\ufffd"  # a cut character is replaced


@pytest.mark.parametrize("tokenizer", [CharTokenizer.from_text("hello wörld", unknown="?"),
                                       CharTokenizer("ba"), ByteTokenizer()], ids=repr)
def test_to_dict_round_trips_through_json(tokenizer):
    description = json.loads(json.dumps(tokenizer.to_dict()))
    rebuilt = tokenizer_from_dict(description)
    assert isinstance(rebuilt, Tokenizer) and type(rebuilt) is type(tokenizer)
    assert rebuilt == tokenizer
    assert type(tokenizer).from_dict(description) == tokenizer
    every_id = list(range(tokenizer.vocab_size))
    assert rebuilt.decode(every_id) == tokenizer.decode(every_id)


def test_from_dict_refuses_unknown_or_mismatched_kinds():
    with pytest.raises(ValueError, match="unknown tokenizer kind 'word'.*'byte', 'char'"):
        tokenizer_from_dict({"kind": "word"})
    with pytest.raises(ValueError, match="kind 'char'"):
        CharTokenizer.from_dict({"kind": "byte"})


@given(st.text())
def test_byte_tokenizer_round_trips_any_text(text):
    tokenizer = ByteTokenizer()
    assert tokenizer.decode(tokenizer.encode(text)) == text


@given(st.text(min_size=1), st.data())
def test_char_tokenizer_round_trips_text_over_its_vocabulary(vocabulary_text, data):
    tokenizer = CharTokenizer.from_text(vocabulary_text)
    text = data.draw(st.text(alphabet=sorted(set(vocabulary_text))))
    ids = tokenizer.encode(text)
    assert ids.shape == (len(text),)
    assert tokenizer.decode(ids) == text


# ---------------------------------------------------------------------- split
def test_split_keeps_the_last_fraction_for_validation():
    ids = np.arange(1000)
    train, val = split_train_val(ids, val_fraction=0.1)
    assert train.tolist() == list(range(900)) and val.tolist() == list(range(900, 1000))
    train, val = split_train_val(list(range(10)), val_fraction=0.25)  # round(2.5) == 2
    assert len(train) == 8 and val.tolist() == [8, 9]


def test_split_refuses_parts_that_are_too_short():
    with pytest.raises(ValueError, match="95 training and 5 validation ids.*at least 9"):
        split_train_val(np.arange(100), val_fraction=0.05, min_length=9)
    with pytest.raises(ValueError, match="0 validation ids"):
        split_train_val(np.arange(4), val_fraction=0.1)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        split_train_val(np.arange(100), val_fraction=1.0)


# ---------------------------------------------------------------------- random windows
def test_batch_shapes_dtypes_and_shift():
    ids = np.arange(50) * 7
    x, y = RandomWindowBatcher(ids, block_size=6, batch_size=5, seed=0).next_batch()
    assert isinstance(x, tn.Tensor) and isinstance(y, tn.Tensor)
    assert x.shape == y.shape == (5, 6) and x.dtype == y.dtype == np.int64
    assert x.device == "cpu"
    x, y = x.numpy(), y.numpy()
    assert (x[:, 1:] == y[:, :-1]).all()
    assert (y - x == 7).all()  # each window is consecutive ids of the source


def test_windows_reach_both_ends_of_the_ids():
    ids = np.arange(12)
    batcher = RandomWindowBatcher(ids, block_size=4, batch_size=200, seed=1)
    firsts = batcher.next_batch()[0].numpy()[:, 0]
    assert set(firsts.tolist()) == set(range(12 - 4))


def test_same_seed_same_batches_other_seed_different():
    ids = np.arange(10_000)

    def draws(seed):
        batcher = RandomWindowBatcher(ids, block_size=8, batch_size=4, seed=seed)
        return [batcher.next_batch()[0].tolist() for _ in range(3)]

    assert draws(5) == draws(5)
    assert draws(5) != draws(6)
    assert draws(np.random.default_rng(5)) == draws(5)


def test_state_dict_resumes_the_same_sequence():
    ids = np.arange(10_000)
    uninterrupted = RandomWindowBatcher(ids, block_size=8, batch_size=4, seed=3)
    expected = [uninterrupted.next_batch()[1].tolist() for _ in range(6)]

    first_run = RandomWindowBatcher(ids, block_size=8, batch_size=4, seed=3)
    drawn = [first_run.next_batch()[1].tolist() for _ in range(3)]
    state = json.loads(json.dumps(first_run.state_dict()))  # survives a JSON checkpoint
    resumed = RandomWindowBatcher(ids, block_size=8, batch_size=4, seed=999)
    resumed.load_state_dict(state)
    drawn += [resumed.next_batch()[1].tolist() for _ in range(3)]
    assert drawn == expected


def test_load_state_dict_refuses_a_foreign_state():
    batcher = RandomWindowBatcher(np.arange(100), block_size=8, batch_size=4, seed=0)
    with pytest.raises(ValueError, match="PCG64 generator state"):
        batcher.load_state_dict({"generator": {"bit_generator": "MT19937"}})


def test_batcher_refuses_too_few_ids_and_bad_sizes():
    with pytest.raises(ValueError, match="8 token ids are too few.*block_size \\+ 1 = 9"):
        RandomWindowBatcher(np.arange(8), block_size=8, batch_size=2)
    RandomWindowBatcher(np.arange(9), block_size=8, batch_size=2).next_batch()
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        RandomWindowBatcher(np.arange(100), block_size=8, batch_size=0)


@given(st.integers(1, 16), st.integers(1, 8), st.integers(0, 40), st.integers(0, 2**32 - 1))
def test_random_batches_are_shifted_windows_of_the_ids(block_size, batch_size, extra, seed):
    ids = np.random.default_rng(seed).integers(0, 50, size=block_size + 1 + extra)
    x, y = RandomWindowBatcher(ids, block_size, batch_size, seed=seed).next_batch()
    x, y = x.numpy(), y.numpy()
    assert x.shape == y.shape == (batch_size, block_size)
    assert (x[:, 1:] == y[:, :-1]).all()
    windows = {tuple(ids[start:start + block_size + 1]) for start in range(extra + 1)}
    for row_x, row_y in zip(x, y):
        assert tuple(row_x) + (row_y[-1],) in windows


# ---------------------------------------------------------------------- sequential windows
def test_sequential_batches_cover_the_ids_in_order():
    ids = np.arange(23)
    batches = list(sequential_batches(ids, block_size=4, batch_size=2))
    assert [x.shape for x, _ in batches] == [(2, 4), (2, 4), (1, 4)]  # 5 windows; ids 21, 22 left
    inputs = np.concatenate([x.numpy() for x, _ in batches]).ravel()
    targets = np.concatenate([y.numpy() for _, y in batches]).ravel()
    assert inputs.tolist() == list(range(20)) and targets.tolist() == list(range(1, 21))
    assert all(x.dtype == y.dtype == np.int64 for x, y in batches)


def test_sequential_batches_are_the_same_every_time():
    ids = np.random.default_rng(0).integers(0, 65, size=1000)

    def collected():
        return [(x.tolist(), y.tolist()) for x, y in sequential_batches(ids, 16, 8)]

    assert collected() == collected()


def test_sequential_batches_max_batches_and_errors():
    assert len(list(sequential_batches(np.arange(1000), 10, 4, max_batches=3))) == 3
    with pytest.raises(ValueError, match="4 token ids are too few"):
        sequential_batches(np.arange(4), block_size=4, batch_size=1)  # checked at the call
    with pytest.raises(ValueError, match="max_batches must be a positive integer"):
        sequential_batches(np.arange(100), 4, 2, max_batches=0)


@given(st.integers(1, 10), st.integers(1, 6), st.integers(0, 60))
def test_sequential_batches_are_consecutive_windows(block_size, batch_size, extra):
    ids = np.arange(block_size + 1 + extra) * 3
    batches = list(sequential_batches(ids, block_size, batch_size))
    window_count = (len(ids) - 1) // block_size
    assert sum(x.shape[0] for x, _ in batches) == window_count
    assert all(x.shape[0] == batch_size for x, _ in batches[:-1])
    inputs = np.concatenate([x.numpy() for x, _ in batches]).ravel()
    targets = np.concatenate([y.numpy() for _, y in batches]).ravel()
    assert (inputs == ids[:window_count * block_size]).all()
    assert (targets == ids[1:window_count * block_size + 1]).all()


def test_batches_land_on_the_requested_device(device):
    ids = np.arange(100)
    x, y = RandomWindowBatcher(ids, 8, 2, seed=0).next_batch(device=device)
    assert x.device == device and y.device == device
    x, y = next(sequential_batches(ids, 8, 2, device=device))
    assert x.device == device and x.tolist()[0] == list(range(8))
