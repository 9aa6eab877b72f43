"""Transformer layers, stacks and the encoder-decoder Transformer: parameter names, gradients
(float64 gradcheck w.r.t. inputs and every parameter), masks, layouts, module cloning, errors,
and two small learning tasks (sorting digits, overfitting a paragraph)."""

import copy

import numpy as np
import pytest

import tinynlm as tn
from tests.nn.module_call import ModuleCall
from tests.nn.module_gradcheck import module_gradcheck
from tinynlm import nn
from tinynlm.optim import Adam


def randn(*shape, requires_grad=True):
    return tn.randn(*shape, dtype=tn.float64, requires_grad=requires_grad)


def padding(*rows):
    """A bool key padding mask, True at padding, from rows of 0/1."""
    return tn.tensor(np.array(rows, dtype=bool))


LAYER_OPTIONS = [dict(norm_first=norm_first, activation=activation)
                 for norm_first in (False, True) for activation in ("relu", "gelu")]


def _layer_id(options):
    return f"{'pre' if options['norm_first'] else 'post'}-LN {options['activation']}"


# ----------------------------------------------------------------------------- layers


def test_layer_parameter_names_follow_pytorch():
    encoder_layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16)
    assert list(encoder_layer.state_dict()) == [
        "self_attn.in_proj_weight", "self_attn.in_proj_bias", "self_attn.out_proj.weight",
        "self_attn.out_proj.bias", "linear1.weight", "linear1.bias", "linear2.weight",
        "linear2.bias", "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias"]
    decoder_layer = nn.TransformerDecoderLayer(8, 2, dim_feedforward=16, bias=False)
    assert [name for name in decoder_layer.state_dict() if "norm" in name or "attn" in name] == [
        "self_attn.in_proj_weight", "self_attn.out_proj.weight",
        "multihead_attn.in_proj_weight", "multihead_attn.out_proj.weight",
        "norm1.weight", "norm2.weight", "norm3.weight"]
    assert decoder_layer.dropout3.p == 0.1 and decoder_layer.self_attn.dropout == 0.1


def gradcheck_layer(layer, call, inputs, all_parameters):
    """gradcheck of ``call(layer, *inputs)`` in float64 w.r.t. the inputs, and every parameter
    too when ``all_parameters`` (the costly part, so only for some option sets)."""
    if all_parameters:
        return module_gradcheck(ModuleCall(layer, call), *inputs)
    layer.double()
    return tn.gradcheck(lambda *tensors: call(layer, *tensors), inputs)


@pytest.mark.parametrize("options", LAYER_OPTIONS, ids=_layer_id)
def test_encoder_layer_gradcheck(options):
    layer = nn.TransformerEncoderLayer(4, 2, dim_feedforward=6, dropout=0.0, batch_first=True,
                                       **options)
    mask = tn.tensor(np.array([[0, 1, 0], [0, 0, 1], [0, 0, 0]], dtype=bool))
    key_padding = padding([0, 0, 0], [0, 0, 1])

    def call(module, src):
        return module(src, src_mask=mask, src_key_padding_mask=key_padding)

    all_parameters = options["norm_first"] == (options["activation"] == "gelu")
    assert gradcheck_layer(layer, call, (randn(2, 3, 4),), all_parameters)


@pytest.mark.parametrize("options", LAYER_OPTIONS, ids=_layer_id)
def test_decoder_layer_gradcheck(options):
    layer = nn.TransformerDecoderLayer(4, 2, dim_feedforward=6, dropout=0.0, **options)
    tgt_mask = nn.Transformer.generate_square_subsequent_mask(3, dtype=tn.float64)
    memory_padding = padding([0, 0, 1, 1], [0, 0, 0, 0])

    def call(module, tgt, memory):
        return module(tgt, memory, tgt_mask=tgt_mask, memory_key_padding_mask=memory_padding)

    all_parameters = options["norm_first"] != (options["activation"] == "gelu")
    assert gradcheck_layer(layer, call, (randn(3, 2, 4), randn(4, 2, 4)), all_parameters)


def test_layer_activation_choices():
    x = randn(2, 3, 4, requires_grad=False)
    layers = {}
    for activation in ("relu", nn.functional.relu, nn.ReLU(), "gelu", nn.GELU()):
        tn.manual_seed(0)
        layer = nn.TransformerEncoderLayer(4, 2, dim_feedforward=6, dropout=0.0,
                                           activation=activation).double()
        layers[str(activation)] = layer(x).detach().numpy()
    outputs = list(layers.values())
    np.testing.assert_allclose(outputs[1], outputs[0])
    np.testing.assert_allclose(outputs[2], outputs[0])
    np.testing.assert_allclose(outputs[4], outputs[3])
    assert not np.allclose(outputs[3], outputs[0])
    with pytest.raises(RuntimeError, match="activation should be 'relu', 'gelu'"):
        nn.TransformerEncoderLayer(4, 2, activation="tanh")


def test_dropout_only_while_training():
    layer = nn.TransformerEncoderLayer(4, 2, dim_feedforward=6, dropout=0.5)
    x = tn.randn(3, 2, 4)
    assert not np.allclose(layer(x).detach().numpy(), layer(x).detach().numpy())
    layer.eval()
    np.testing.assert_array_equal(layer(x).detach().numpy(), layer(x).detach().numpy())


def test_unbatched_and_batch_first_inputs_agree():
    tn.manual_seed(0)
    layer = nn.TransformerDecoderLayer(4, 2, dim_feedforward=6, dropout=0.0).double()
    tgt, memory = randn(3, 2, 4, requires_grad=False), randn(5, 2, 4, requires_grad=False)
    output = layer(tgt, memory).detach().numpy()
    np.testing.assert_allclose(layer(tgt[:, 1], memory[:, 1]).detach().numpy(), output[:, 1],
                               rtol=1e-12)
    for attention in (layer.self_attn, layer.multihead_attn):
        attention.batch_first = True
    batch_first = layer(tgt.transpose(0, 1), memory.transpose(0, 1))
    np.testing.assert_allclose(batch_first.transpose(0, 1).detach().numpy(), output, rtol=1e-12)


# ----------------------------------------------------------------------------- stacks


def test_deepcopy_makes_independent_copies():
    layer = nn.TransformerEncoderLayer(4, 2, dim_feedforward=6)
    layer.linear1.weight.grad = tn.ones(6, 4)
    twin = copy.deepcopy(layer)
    assert twin.linear1.weight is not layer.linear1.weight
    assert twin.linear1.weight.grad is not layer.linear1.weight.grad
    for (name, param), (twin_name, twin_param) in zip(layer.named_parameters(),
                                                      twin.named_parameters()):
        assert name == twin_name and isinstance(twin_param, nn.Parameter)
        np.testing.assert_array_equal(param.detach().numpy(), twin_param.detach().numpy())
    with tn.no_grad():
        twin.linear1.weight.fill_(0.0)
    assert not (layer.linear1.weight == 0).all()
    assert twin(tn.randn(3, 2, 4)).shape == (3, 2, 4)  # the copy still computes on the CPU


def test_encoder_stacks_independent_copies_and_norm():
    layer = nn.TransformerEncoderLayer(4, 2, dim_feedforward=6, dropout=0.0)
    encoder = nn.TransformerEncoder(layer, num_layers=3, norm=nn.LayerNorm(4),
                                    enable_nested_tensor=False)
    assert len(encoder.layers) == 3 and encoder.num_layers == 3
    assert len({id(module.linear1.weight) for module in encoder.layers}) == 3
    assert "layers.2.norm2.bias" in encoder.state_dict() and "norm.weight" in encoder.state_dict()
    x = tn.randn(5, 2, 4)
    expected = x
    for module in encoder.layers:
        expected = module(expected)
    np.testing.assert_allclose(encoder(x).detach().numpy(),
                               encoder.norm(expected).detach().numpy(), rtol=1e-6)


def test_causal_encoder_does_not_look_ahead():
    tn.manual_seed(0)
    encoder = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(4, 2, dim_feedforward=6, dropout=0.0, batch_first=True), 2)
    encoder.double()
    mask = nn.Transformer.generate_square_subsequent_mask(5)
    x = randn(2, 5, 4, requires_grad=False)
    changed = x.detach().clone()
    changed[:, 3:] = 10.0
    for kwargs in ({"mask": mask}, {"mask": mask, "is_causal": True},
                   {"mask": mask.bool()}):  # a bool mask: True where not allowed
        before, after = encoder(x, **kwargs), encoder(changed, **kwargs)
        np.testing.assert_allclose(after[:, :3].detach().numpy(), before[:, :3].detach().numpy(),
                                   rtol=1e-12)
        assert not np.allclose(after[:, 3:].detach().numpy(), before[:, 3:].detach().numpy())


def test_bool_causal_mask_means_not_allowed():
    tn.manual_seed(0)
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(4, 2, 6, 0.0), 1).double()
    x = randn(4, 2, 4, requires_grad=False)
    float_mask = nn.Transformer.generate_square_subsequent_mask(4)
    bool_mask = tn.tensor(np.triu(np.ones((4, 4), dtype=bool), 1))
    np.testing.assert_allclose(encoder(x, mask=bool_mask).detach().numpy(),
                               encoder(x, mask=float_mask).detach().numpy(), rtol=1e-12)


def test_padding_keys_are_ignored():
    tn.manual_seed(0)
    model = nn.Transformer(d_model=4, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
                           dim_feedforward=6, dropout=0.0, batch_first=True).double()
    src, tgt = randn(2, 5, 4, requires_grad=False), randn(2, 3, 4, requires_grad=False)
    src_padding = padding([0, 0, 0, 1, 1], [0, 0, 0, 0, 0])
    changed = src.detach().clone()
    changed[0, 3:] = -7.0
    kwargs = dict(src_key_padding_mask=src_padding, memory_key_padding_mask=src_padding)
    np.testing.assert_allclose(model(changed, tgt, **kwargs).detach().numpy(),
                               model(src, tgt, **kwargs).detach().numpy(), rtol=1e-12)


def test_transformer_structure_init_and_errors():
    model = nn.Transformer(d_model=8, nhead=2, num_encoder_layers=2, num_decoder_layers=1,
                           dim_feedforward=16)
    names = list(model.state_dict())
    for name in ("encoder.layers.1.self_attn.in_proj_weight", "encoder.norm.weight",
                 "decoder.layers.0.multihead_attn.out_proj.bias", "decoder.norm.bias"):
        assert name in names
    assert not any(name.startswith("decoder.layers.1") for name in names)
    # Every matrix is re-drawn Xavier-uniform: linear1 (16, 8) within sqrt(6 / 24).
    assert float(model.encoder.layers[0].linear1.weight.abs().max()) <= (6 / 24) ** 0.5
    first, second = model.encoder.layers
    assert not np.allclose(first.linear1.weight.detach().numpy(),
                           second.linear1.weight.detach().numpy())
    with pytest.raises(RuntimeError, match="same batch size"):
        model(tn.randn(5, 2, 8), tn.randn(4, 3, 8))
    with pytest.raises(RuntimeError, match="d_model=8"):
        model(tn.randn(5, 2, 8), tn.randn(4, 2, 6))


def test_custom_encoder_and_decoder():
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(4, 2, 6), 1)
    decoder = nn.TransformerDecoder(nn.TransformerDecoderLayer(4, 2, 6), 2)
    model = nn.Transformer(d_model=4, nhead=2, custom_encoder=encoder, custom_decoder=decoder)
    assert model.encoder is encoder and model.decoder is decoder
    assert model(tn.randn(5, 4), tn.randn(3, 4)).shape == (3, 4)  # unbatched


def test_generate_square_subsequent_mask():
    mask = nn.Transformer.generate_square_subsequent_mask(3)
    assert mask.dtype == tn.float32 and mask.shape == (3, 3)
    assert mask.tolist() == [[0.0, -np.inf, -np.inf], [0.0, 0.0, -np.inf], [0.0, 0.0, 0.0]]
    model = nn.Transformer(d_model=4, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
                           dim_feedforward=4)
    assert model.generate_square_subsequent_mask(2, dtype=tn.float64).dtype == tn.float64


# ----------------------------------------------------------------------------- learning


class DigitSorter(nn.Module):
    """Encoder-decoder Transformer from a digit sequence to the same digits sorted."""

    DIGITS, LENGTH, D_MODEL = 10, 5, 32
    START = DIGITS  # the decoder's start token

    def __init__(self):
        super().__init__()
        self.source_embedding = nn.Embedding(self.DIGITS, self.D_MODEL)
        self.target_embedding = nn.Embedding(self.DIGITS + 1, self.D_MODEL)
        self.positions = nn.LearnedPositionalEmbedding(self.LENGTH, self.D_MODEL)
        self.transformer = nn.Transformer(
            d_model=self.D_MODEL, nhead=4, num_encoder_layers=2, num_decoder_layers=2,
            dim_feedforward=64, dropout=0.0, batch_first=True)
        self.head = nn.Linear(self.D_MODEL, self.DIGITS)

    def forward(self, source, target_in):
        causal = nn.Transformer.generate_square_subsequent_mask(target_in.shape[1])
        hidden = self.transformer(self.positions(self.source_embedding(source)),
                                  self.positions(self.target_embedding(target_in)),
                                  tgt_mask=causal)
        return self.head(hidden)                                         # (N, T, digits)

    def sort(self, source):
        """Greedy decoding, one digit at a time."""
        output = np.full((source.shape[0], 1), self.START)
        with tn.no_grad():
            for _ in range(self.LENGTH):
                logits = self(tn.tensor(source), tn.tensor(output))
                output = np.concatenate([output, logits.argmax(-1).numpy()[:, -1:]], axis=1)
        return output[:, 1:]


def test_transformer_learns_to_sort_digits():
    # Batches of 32 keep every matrix product small enough for BLAS to stay on one thread,
    # which is much faster than threading such small products on a busy 2-core machine.
    tn.manual_seed(0)
    rng = np.random.default_rng(0)
    model = DigitSorter()
    optimizer = Adam(model.parameters(), lr=3e-3)
    for _ in range(100):
        source = rng.integers(0, DigitSorter.DIGITS, (32, DigitSorter.LENGTH))
        target = np.sort(source, axis=1)
        target_in = np.concatenate([np.full((32, 1), DigitSorter.START), target[:, :-1]], 1)
        logits = model(tn.tensor(source), tn.tensor(target_in))
        loss = nn.functional.cross_entropy(logits.reshape(-1, DigitSorter.DIGITS),
                                           tn.tensor(target.reshape(-1)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    source = rng.integers(0, DigitSorter.DIGITS, (128, DigitSorter.LENGTH))
    accuracy = (model.sort(source) == np.sort(source, axis=1)).mean()
    assert accuracy >= 0.9, f"greedy token accuracy {accuracy:.3f} after 100 steps"


PARAGRAPH = ("It was the best of times, it was the worst of times, it was the age of wisdom, "
             "it was the age of foolishness, it was the epoch of belief.")


class CharModel(nn.Module):
    """A causal character model: encoder layers with the causal mask (decoder-only GPT)."""

    def __init__(self, vocabulary, context, d_model=32):
        super().__init__()
        self.embedding = nn.Embedding(vocabulary, d_model)
        self.positions = nn.SinusoidalPositionalEncoding(d_model, max_len=context)
        layer = nn.TransformerEncoderLayer(d_model, 4, dim_feedforward=64, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, num_layers=2, norm=nn.LayerNorm(d_model))
        self.head = nn.Linear(d_model, vocabulary)

    def forward(self, ids):
        causal = nn.Transformer.generate_square_subsequent_mask(ids.shape[1])
        hidden = self.blocks(self.positions(self.embedding(ids)), mask=causal, is_causal=True)
        return self.head(hidden)                                         # (N, T, vocabulary)


def test_causal_transformer_overfits_a_paragraph():
    tn.manual_seed(0)
    characters = sorted(set(PARAGRAPH))
    ids = np.array([characters.index(c) for c in PARAGRAPH])
    context = 16
    windows = np.stack([ids[start:start + context + 1]
                        for start in range(0, len(ids) - context, context)])  # (8, T + 1)
    model = CharModel(len(characters), context)
    optimizer = Adam(model.parameters(), lr=5e-3)
    inputs = tn.tensor(windows[:, :-1])
    targets = tn.tensor(windows[:, 1:].reshape(-1))
    for _ in range(80):
        loss = nn.functional.cross_entropy(model(inputs).reshape(-1, len(characters)), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.2, f"loss {loss.item():.3f} nats per character after 80 steps"
