"""GPT: shapes, initialisation, gradients, errors, the key/value cache and a short training run."""

import math

import numpy as np
import pytest

import tinynlm as tn
from tests.models.language_model_checks import encoded_text, naive_generate, train_on_text
from tests.nn.module_gradcheck import parameters_replaced
from tinynlm.models import GPT, GPTConfig, KVCache, Sampler


def small_config(**changes):
    sizes = dict(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16)
    return GPTConfig(**{**sizes, **changes})


def test_shapes_and_parameter_count():
    config = small_config()
    model = GPT(config)
    idx = tn.randint(0, 11, (3, 5))
    logits, loss = model(idx)
    assert logits.shape == (3, 5, 11) and loss is None
    C, V, L = config.n_embd, config.vocab_size, config.n_layer
    per_block = 4 * C + (3 * C * C + 3 * C) + (C * C + C) + (4 * C * C + 4 * C) + (4 * C * C + C)
    expected = V * C + config.block_size * C + L * per_block + 2 * C  # lm_head shares wte
    assert model.num_parameters() == expected


def test_head_is_tied_to_the_token_embedding():
    model = GPT(small_config())
    assert model.lm_head.weight is model.transformer.wte.weight
    names = [name for name, _ in model.named_parameters()]
    assert "transformer.wte.weight" in names and "lm_head.weight" not in names
    assert "lm_head.weight" in model.state_dict()


def test_nanogpt_initialisation():
    config = GPTConfig(vocab_size=96, n_layer=4)
    model = GPT(config)
    attention = model.transformer.h[0].attn

    def std(parameter):
        return parameter.detach().numpy().std()

    assert abs(std(attention.c_attn.weight) - 0.02) < 0.002
    assert abs(std(model.transformer.wpe.weight) - 0.02) < 0.002
    for projection in (attention.c_proj, model.transformer.h[3].mlp.c_proj):
        assert abs(std(projection.weight) - 0.02 / math.sqrt(2 * 4)) < 0.001
    assert not attention.c_attn.bias.detach().numpy().any()


def test_loss_at_initialisation_is_about_log_vocab():
    model = GPT(GPTConfig(vocab_size=96, n_layer=2, n_embd=64))
    idx, targets = tn.randint(0, 96, (4, 32)), tn.randint(0, 96, (4, 32))
    assert abs(model(idx, targets)[1].item() - math.log(96)) < 0.1


def test_gradcheck_of_every_parameter_in_float64():
    model = GPT(GPTConfig(vocab_size=5, block_size=3, n_layer=1, n_head=2, n_embd=4))
    model.double()
    idx, targets = tn.tensor([[0, 3, 4], [2, 1, 0]]), tn.tensor([[3, 4, 1], [1, 0, 2]])
    names = [name for name, _ in model.named_parameters()]
    params = [p.detach().clone().requires_grad_() for _, p in model.named_parameters()]
    embedding = params[names.index("transformer.wte.weight")]

    def call(*replacements):  # the tied head must use the same replacement as the embedding
        with parameters_replaced(model, names + ["lm_head.weight"],
                                 list(replacements) + [embedding]):
            return model(idx, targets)

    assert tn.gradcheck(call, params)


def test_the_future_does_not_change_the_past():
    model = GPT(small_config())
    ids = np.random.default_rng(0).integers(0, 11, (2, 6))
    changed = np.concatenate([ids[:, :4], (ids[:, 4:] + 1) % 11], 1)
    with tn.no_grad():
        logits, changed_logits = model(tn.tensor(ids))[0], model(tn.tensor(changed))[0]
    np.testing.assert_allclose(logits[:, :4].numpy(), changed_logits[:, :4].numpy(), rtol=1e-5,
                               atol=1e-6)
    assert not np.allclose(logits[:, 4:].numpy(), changed_logits[:, 4:].numpy())


def test_forward_with_a_cache_matches_the_full_forward():
    model = GPT(small_config())
    idx = tn.randint(0, 11, (2, 7))
    cache = KVCache(model.config.n_layer)
    with tn.no_grad():
        full = model(idx)[0]
        steps = [model(idx[:, :4], kv_cache=cache)[0]]
        steps += [model(idx[:, t:t + 1], kv_cache=cache)[0] for t in range(4, 7)]
    assert len(cache) == 7 and cache.keys[1].shape == (2, 2, 7, 8)
    np.testing.assert_allclose(tn.cat(steps, 1).numpy(), full.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("options", [
    dict(temperature=0),
    dict(temperature=1.0),
    dict(temperature=0.8, top_k=4, top_p=0.9),
])
@pytest.mark.parametrize("prompt_length, new_tokens", [(3, 4), (3, 12), (10, 3)])
def test_cached_generation_matches_naive_generation(options, prompt_length, new_tokens):
    """Also past block_size (8): a prompt that must be cropped, and a context that fills up."""
    model = GPT(small_config(dropout=0.1))
    prompt = tn.randint(0, 11, (3, prompt_length))
    cached = model.generate(prompt, new_tokens, **options, generator=np.random.default_rng(7))
    naive = naive_generate(model, prompt, new_tokens,
                           Sampler(**options, generator=np.random.default_rng(7)),
                           context_size=model.config.block_size)
    assert cached.shape == (3, prompt_length + new_tokens)
    assert cached.tolist() == naive.tolist()


def test_each_new_token_costs_one_position_until_the_context_is_full(monkeypatch):
    model = GPT(small_config())
    lengths = []
    forward = model.forward

    def recording_forward(idx, *args, **kwargs):
        lengths.append(idx.shape[1])
        return forward(idx, *args, **kwargs)

    monkeypatch.setattr(model, "forward", recording_forward)
    model.generate(tn.randint(0, 11, (1, 3)), 8, temperature=0)
    # The prompt, then one position per token up to block_size (8), then whole windows.
    assert lengths == [3, 1, 1, 1, 1, 1, 8, 8]


def test_generate_tokens_streams_what_generate_returns():
    model = GPT(small_config())
    prompt = tn.randint(0, 11, (2, 3))
    stream = model.generate_tokens(prompt, 5, top_k=5, generator=np.random.default_rng(1))
    streamed = []
    for ids in stream:
        assert ids.shape == (2,) and ids.dtype == np.int64
        # Between tokens the caller's world is as it was: training mode, gradients on.
        assert model.training and tn.is_grad_enabled()
        streamed.append(ids.tolist())
    generated = model.generate(prompt, 5, top_k=5, generator=np.random.default_rng(1))
    assert generated[:, 3:].tolist() == np.array(streamed).T.tolist()
    assert model.generate(prompt, 0).tolist() == prompt.tolist()


def test_dropout_is_off_while_generating():
    model = GPT(small_config(dropout=0.5))
    prompt = tn.randint(0, 11, (2, 3))
    first = model.generate(prompt, 6, temperature=0)
    assert model.generate(prompt, 6, temperature=0).tolist() == first.tolist()
    assert model.training


def test_forward_errors_name_the_sizes():
    model = GPT(small_config())
    with pytest.raises(ValueError, match="sequence length 9 exceeds the block_size of 8"):
        model(tn.zeros(1, 9, dtype=tn.int64))
    with pytest.raises(IndexError, match="id 11 is out of range for 11"):
        model(tn.tensor([[1, 11]]))
    with pytest.raises(TypeError, match="integer Tensor"):
        model(tn.zeros(1, 3))
    with pytest.raises(ValueError, match=r"shape \(B, T\).*\(3,\)"):
        model(tn.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match=r"targets must be a tensor of the ids' shape \(1, 3\)"):
        model(tn.tensor([[1, 2, 3]]), tn.tensor([[1, 2]]))
    cache = KVCache(2)
    model(tn.tensor([[1, 2]]), kv_cache=cache)
    with pytest.raises(ValueError, match="after 2 cached positions feed one token"):
        model(tn.tensor([[1, 2]]), kv_cache=cache)
    for _ in range(6):
        model(tn.tensor([[1]]), kv_cache=cache)
    with pytest.raises(ValueError, match=r"length 9 \(8 cached \+ 1 new\) exceeds the block_size"):
        model(tn.tensor([[1]]), kv_cache=cache)
    with pytest.raises(ValueError, match="kv_cache has 3 layers, the model 2"):
        model(tn.tensor([[1]]), kv_cache=KVCache(3))


def test_generation_errors_come_at_the_call():
    model = GPT(small_config())
    prompt = tn.tensor([[1, 2]])
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate_tokens(prompt, -1)
    with pytest.raises(ValueError, match="top_p"):
        model.generate_tokens(prompt, 3, top_p=2.0)
    with pytest.raises(IndexError, match="out of range"):
        model.generate_tokens(tn.tensor([[1, 20]]), 3)


@pytest.mark.parametrize("changes, message", [
    (dict(n_embd=10, n_head=4), r"n_embd \(10\) must be a multiple of n_head \(4\)"),
    (dict(vocab_size=0), "vocab_size"),
    (dict(dropout=1.0), "dropout"),
])
def test_config_errors(changes, message):
    with pytest.raises(ValueError, match=message):
        small_config(**changes)


def test_a_one_layer_gpt_overfits_200_characters():
    _, vocab_size = encoded_text()
    model = GPT(GPTConfig(vocab_size=vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=32))
    assert train_on_text(model, length=16, steps=80, lr=1e-2) < 0.5
