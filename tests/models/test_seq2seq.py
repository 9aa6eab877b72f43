"""AttentionRNNSeq2Seq and TransformerSeq2Seq: shapes, padding, greedy decoding, attention
weights and float64 gradient checks of every parameter."""

import numpy as np
import pytest

import tinynlm as tn
from tests.nn.module_gradcheck import module_gradcheck
from tinynlm.models import AttentionRNNSeq2Seq, TransformerSeq2Seq

VOCAB, PAD, BOS, EOS = 9, 0, 1, 2
KINDS = ["rnn", "transformer"]


def small_model(kind, vocab_size=VOCAB, **changes):
    if kind == "rnn":
        return AttentionRNNSeq2Seq(vocab_size, **{"embedding_dim": 6, "hidden_size": 8,
                                                  "attention_size": 5, **changes})
    return TransformerSeq2Seq(vocab_size, **{"d_model": 8, "nhead": 2, "num_encoder_layers": 1,
                                             "num_decoder_layers": 2, "dim_feedforward": 16,
                                             **changes})


def padded_batch():
    """Two sources, the second padded; decoder inputs of 4 steps."""
    src = tn.tensor([[3, 4, 5, 6, 7], [8, 7, 3, PAD, PAD]])               # (2, 5)
    tgt_in = tn.tensor([[BOS, 5, 6, 7], [BOS, 3, 4, 8]])                 # (2, 4)
    return src, tgt_in


@pytest.mark.parametrize("kind", KINDS)
def test_forward_and_greedy_decode_shapes(kind):
    model = small_model(kind)
    src, tgt_in = padded_batch()
    assert model(src, tgt_in).shape == (2, 4, VOCAB)
    ids, weights = model.greedy_decode(src, max_len=6)
    steps = ids.shape[1]
    assert ids.shape == (2, steps) and 1 <= steps <= 6 and ids.dtype == tn.int64
    assert weights.shape == (2, steps, 5)
    np.testing.assert_allclose(weights.numpy().sum(-1), 1.0, rtol=1e-5)
    assert (weights.numpy()[1, :, 3:] == 0).all()                         # padding gets none
    assert model.training                                                 # mode restored


@pytest.mark.parametrize("kind", KINDS)
def test_padding_changes_nothing(kind):
    model = small_model(kind)
    src, tgt_in = padded_batch()
    with tn.no_grad():
        batched = model(src, tgt_in)[1]                                   # (4, VOCAB)
        alone = model(src[1:, :3], tgt_in[1:])[0]
    np.testing.assert_allclose(batched.numpy(), alone.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_decode_is_the_argmax_of_teacher_forcing(kind):
    model = small_model(kind)
    src, _ = padded_batch()
    ids, _ = model.greedy_decode(src, max_len=7)
    decoder_inputs = tn.cat([tn.full((2, 1), BOS, dtype=tn.int64), ids[:, :-1]], dim=1)
    with tn.no_grad():
        model.eval()
        chosen = model(src, decoder_inputs).argmax(dim=-1).numpy()        # (2, T_out)
    for row, chosen_row in zip(ids.numpy(), chosen):
        length = list(row).index(EOS) + 1 if EOS in row else len(row)    # up to EOS
        assert row[:length].tolist() == chosen_row[:length].tolist()


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_decode_stops_at_eos_and_pads_after(kind):
    model = small_model(kind)
    src, _ = padded_batch()
    with tn.no_grad():
        model.output.bias.data[EOS] = 100.0                               # always choose EOS
    ids, weights = model.greedy_decode(src, max_len=5)
    assert ids.tolist() == [[EOS], [EOS]] and weights.shape == (2, 1, 5)
    with tn.no_grad():
        model.output.bias.data[EOS] = 0.0
        model.output.bias.data[4] = 100.0                                 # never choose EOS
    ids, _ = model.greedy_decode(src, max_len=5)
    assert ids.tolist() == [[4] * 5] * 2


def test_transformer_reports_the_weights_its_last_decoder_layer_uses(monkeypatch):
    model = small_model("transformer")
    model.eval()
    src, tgt_in = padded_batch()
    cross_attention = model.transformer.decoder.layers[-1].multihead_attn
    recorded = []
    forward = cross_attention.forward

    def forward_recording_weights(*args, **kwargs):
        output = forward(*args, **{**kwargs, "need_weights": True})
        recorded.append(output[1])
        return output

    monkeypatch.setattr(cross_attention, "forward", forward_recording_weights)
    with tn.no_grad():
        memory, padding = model.encode(src)
        model.decode(tgt_in, memory, padding)
        used = recorded[-1]
        reported = model.cross_attention_weights(tgt_in, memory, padding)
    np.testing.assert_allclose(reported.numpy(), used.numpy(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck_of_every_parameter_in_float64(kind):
    if kind == "rnn":
        model = AttentionRNNSeq2Seq(6, embedding_dim=2, hidden_size=2, attention_size=2)
    else:
        model = TransformerSeq2Seq(6, d_model=4, nhead=2, num_encoder_layers=1,
                                   num_decoder_layers=1, dim_feedforward=4)
    src = tn.tensor([[3, 4, 5], [5, 3, PAD]])
    tgt_in = tn.tensor([[BOS, 4], [BOS, 5]])
    assert module_gradcheck(model, src, tgt_in)


def test_errors():
    with pytest.raises(ValueError, match="pad_id 0, bos_id 0 and eos_id 2 must be distinct"):
        AttentionRNNSeq2Seq(VOCAB, bos_id=0)
    with pytest.raises(ValueError, match="below vocab_size 3"):
        TransformerSeq2Seq(3, d_model=4, nhead=1, eos_id=3)
    model = small_model("rnn")
    with pytest.raises(TypeError, match="src must be an integer Tensor"):
        model(tn.randn(2, 3), tn.tensor([[BOS], [BOS]]))
    with pytest.raises(ValueError, match=r"tgt_in must have shape \(B, T\)"):
        model(tn.tensor([[3, 4]]), tn.tensor([BOS]))
    with pytest.raises(ValueError, match="max_len must be a positive int"):
        model.greedy_decode(tn.tensor([[3, 4]]), max_len=0)
