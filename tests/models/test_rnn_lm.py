"""RNNLanguageModel: shapes, carried state, gradients, generation and a short training run."""

import math
import warnings

import numpy as np
import pytest

import tinynlm as tn
from tests.models.language_model_checks import encoded_text, naive_generate, train_on_text
from tests.nn.module_gradcheck import parameters_replaced
from tinynlm.models import RNNLanguageModel, RNNLMConfig, Sampler

CELLS = ["lstm", "gru", "rnn"]


def small_model(cell="lstm", **changes):
    sizes = dict(vocab_size=11, cell=cell, n_embd=8, hidden_size=12, n_layer=2)
    return RNNLanguageModel(RNNLMConfig(**{**sizes, **changes}))


def state_tensors(state):
    return state if isinstance(state, tuple) else (state,)


@pytest.mark.parametrize("cell", CELLS)
def test_shapes_and_state(cell):
    model = small_model(cell)
    logits, loss, state = model(tn.randint(0, 11, (3, 5)))
    assert logits.shape == (3, 5, 11) and loss is None
    assert [tensor.shape for tensor in state_tensors(state)] == \
        [(2, 3, 12)] * (2 if cell == "lstm" else 1)
    assert type(model.rnn).__name__ == cell.upper()


@pytest.mark.parametrize("cell", CELLS)
def test_loss_at_initialisation_is_about_log_vocab(cell):
    model = RNNLanguageModel(RNNLMConfig(vocab_size=96, cell=cell))
    idx, targets = tn.randint(0, 96, (4, 16)), tn.randint(0, 96, (4, 16))
    assert abs(model(idx, targets)[1].item() - math.log(96)) < 0.1


@pytest.mark.parametrize("cell", CELLS)
def test_carrying_the_state_continues_the_sequence(cell):
    model = small_model(cell)
    idx = tn.randint(0, 11, (2, 7))
    with tn.no_grad():
        whole = model(idx)[0]
        first, _, state = model(idx[:, :3])
        second = model(idx[:, 3:], state=state)[0]
    np.testing.assert_allclose(tn.cat([first, second], 1).numpy(), whole.numpy(), rtol=1e-5,
                               atol=1e-6)


def test_detach_state_cuts_the_graph():
    model = small_model("lstm")
    _, _, state = model(tn.randint(0, 11, (2, 3)))
    assert all(tensor.requires_grad for tensor in state)
    detached = RNNLanguageModel.detach_state(state)
    assert isinstance(detached, tuple) and not any(tensor.requires_grad for tensor in detached)
    _, _, state = small_model("gru")(tn.randint(0, 11, (2, 3)))
    assert not RNNLanguageModel.detach_state(state).requires_grad


def test_tied_weights():
    model = small_model(n_embd=12, tie_weights=True)
    assert model.head.weight is model.embedding.weight
    assert model.num_parameters() == small_model(n_embd=12).num_parameters() - 11 * 12
    with pytest.raises(ValueError, match="n_embd == hidden_size, got 8 and 12"):
        small_model(tie_weights=True)


@pytest.mark.parametrize("cell, tie_weights", [("lstm", False), ("gru", True), ("rnn", False)])
def test_gradcheck_of_every_parameter_in_float64(cell, tie_weights):
    model = RNNLanguageModel(RNNLMConfig(vocab_size=5, cell=cell, n_embd=3, hidden_size=3,
                                         n_layer=2, tie_weights=tie_weights)).double()
    idx, targets = tn.tensor([[0, 3, 4], [2, 1, 0]]), tn.tensor([[3, 4, 1], [1, 0, 2]])
    names = [name for name, _ in model.named_parameters()]
    params = [p.detach().clone().requires_grad_() for _, p in model.named_parameters()]
    tied = ["head.weight"] if tie_weights else []
    embedding = params[names.index("embedding.weight")]

    def call(*replacements):
        with parameters_replaced(model, names + tied, list(replacements) + [embedding] * len(tied)):
            logits, loss, state = model(idx, targets)
        return (logits, loss) + state_tensors(state)

    assert tn.gradcheck(call, params)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("options", [dict(temperature=0),
                                     dict(temperature=0.9, top_k=5, top_p=0.9)])
def test_cached_generation_matches_naive_generation(cell, options):
    model = small_model(cell, dropout=0.2)
    prompt = tn.randint(0, 11, (3, 4))
    generated = model.generate(prompt, 10, **options, generator=np.random.default_rng(3))
    naive = naive_generate(model, prompt, 10,
                           Sampler(**options, generator=np.random.default_rng(3)))
    assert generated.shape == (3, 14)
    assert generated.tolist() == naive.tolist()


def test_each_new_token_costs_one_step(monkeypatch):
    model = small_model()
    lengths = []
    forward = model.forward

    def recording_forward(idx, *args, **kwargs):
        lengths.append(idx.shape[1])
        return forward(idx, *args, **kwargs)

    monkeypatch.setattr(model, "forward", recording_forward)
    model.generate(tn.randint(0, 11, (1, 5)), 4, temperature=0)
    assert lengths == [5, 1, 1, 1]


def test_generate_tokens_streams_what_generate_returns():
    model = small_model("gru")
    prompt = tn.randint(0, 11, (2, 3))
    streamed = [ids.tolist() for ids in model.generate_tokens(
        prompt, 6, temperature=1.2, generator=np.random.default_rng(4))]
    generated = model.generate(prompt, 6, temperature=1.2, generator=np.random.default_rng(4))
    assert generated[:, 3:].tolist() == np.array(streamed).T.tolist()
    assert model.training


def test_errors():
    model = small_model()
    with pytest.raises(IndexError, match="id 12 is out of range for 11"):
        model(tn.tensor([[1, 12]]))
    with pytest.raises(ValueError, match=r"targets must be a tensor of the ids' shape \(1, 2\)"):
        model(tn.tensor([[1, 2]]), tn.tensor([1, 2]))
    with pytest.raises(ValueError, match="temperature"):
        model.generate(tn.tensor([[1, 2]]), 3, temperature=-1)
    with pytest.raises(ValueError, match=r"cell must be one of \['gru', 'lstm', 'rnn'\]"):
        RNNLMConfig(vocab_size=5, cell="transformer")


def test_one_layer_dropout_gives_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        small_model(n_layer=1, dropout=0.3)


def test_an_lstm_overfits_200_characters():
    _, vocab_size = encoded_text()
    model = RNNLanguageModel(RNNLMConfig(vocab_size=vocab_size, n_embd=32, hidden_size=64,
                                         n_layer=1))
    assert train_on_text(model, length=16, steps=60, lr=2e-2) < 0.4
