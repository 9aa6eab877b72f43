"""The translation demo: the date data it generates, its vocabulary, the attention maps (text and
PNG), the command line, and short training runs of both models that must translate most
held-out dates exactly.

The demo's default run (``python -m tinynlm.translate_demo --model both``), measured on two CPU
cores: see the ``DEFAULTS`` comment in :mod:`tinynlm.translate_demo`.
"""

import datetime
import re
import sys

import numpy as np
import pytest

import tinynlm as tn
from tinynlm import translate_demo as demo

# How an independent reader parses each style (``time.strptime`` ignores case).
STRPTIME_FORMATS = {
    "day month year": "%d %B %Y",
    "month day, year": "%B %d, %Y",
    "dd/mm/yyyy": "%d/%m/%Y",
    "d/m/yy": "%d/%m/%y",
    "dd.mm.yyyy": "%d.%m.%Y",
    "iso": "%Y-%m-%d",
    "weekday, month ordinal year": "%A, %B %d %Y",
    "the ordinal of month year": "the %d of %B %Y",
    "d mon yy": "%d %b %y",
    "mon d yyyy": "%b %d %Y",
}


def parse(text, style):
    """The date that ``text`` in ``style`` names, read with ``datetime.strptime``."""
    without_ordinals = re.sub(r"(\d)(st|nd|rd|th)\b", r"\1", text, flags=re.IGNORECASE)
    day = datetime.datetime.strptime(without_ordinals, STRPTIME_FORMATS[style]).date()
    if day.year > demo.LAST_DATE.year:  # strptime reads 50-68 as 2050-2068; the demo as 19xx
        day = day.replace(year=day.year - 100)
    return day


def test_every_style_in_every_case_parses_back_to_the_date():
    assert set(STRPTIME_FORMATS) == set(demo.STYLES)
    rng = np.random.default_rng(5)
    first = demo.FIRST_DATE.toordinal()
    ordinals = first + rng.integers(demo.LAST_DATE.toordinal() - first + 1, size=200)
    days = [datetime.date.fromordinal(int(o)) for o in ordinals]
    days += [demo.FIRST_DATE, demo.LAST_DATE, datetime.date(1968, 12, 31),  # two-digit pivot
             datetime.date(2011, 11, 11), datetime.date(2023, 3, 23)]       # 11th, 23rd
    for day in days:
        for style in demo.STYLES:
            written = demo.format_date(day, style)
            for case in demo.CASES:
                assert parse(case(written), style) == day, (written, style)
        weekday_style = demo.format_date(day, "weekday, month ordinal year")
        assert weekday_style.split(",")[0] == day.strftime("%A")           # the right weekday


def test_the_split_covers_every_date_once_and_is_deterministic():
    train_dates, held_out_dates = demo.split_dates(np.random.default_rng(0))
    assert not set(train_dates) & set(held_out_dates)
    days = demo.LAST_DATE.toordinal() - demo.FIRST_DATE.toordinal() + 1
    assert len(set(train_dates) | set(held_out_dates)) == len(train_dates) + len(held_out_dates) \
        == days
    assert len(held_out_dates) == days // 10
    again = demo.split_dates(np.random.default_rng(0))
    assert again == (train_dates, held_out_dates)
    assert demo.split_dates(np.random.default_rng(1))[1] != held_out_dates


def test_pairs_are_deterministic_and_draw_every_style_and_case():
    _, held_out_dates = demo.split_dates(np.random.default_rng(0))
    pairs = demo.sample_pairs(held_out_dates, 600, np.random.default_rng(2))
    assert pairs == demo.sample_pairs(held_out_dates, 600, np.random.default_rng(2))
    assert pairs != demo.sample_pairs(held_out_dates, 600, np.random.default_rng(3))
    held_out = {day.isoformat() for day in held_out_dates}
    assert all(target in held_out for _, target in pairs)
    assert len({target for _, target in pairs}) == 600                    # no date twice
    sources = [source for source, _ in pairs]
    assert any(source.isupper() for source in sources)
    assert any(source.islower() for source in sources)
    assert any(re.fullmatch(r"[A-Z][a-z]+day, .*", source) for source in sources)
    for source, target in pairs:
        assert any(_parses_to(source, style, target) for style in demo.STYLES), source


def _parses_to(source, style, target):
    try:
        return parse(source, style).isoformat() == target
    except ValueError:
        return False


def test_encode_batch_and_decode_ids_round_trip():
    pairs = [("Friday, April 3rd 1998", "1998-04-03"), ("3/4/98", "1998-04-03")]
    src, tgt_in, tgt_out = demo.encode_batch(pairs)
    assert src.shape == (2, 22) and tgt_in.shape == tgt_out.shape == (2, 11)
    assert demo.VOCABULARY.decode(src[1, :6]) == "3/4/98"
    assert (src[1, 6:].numpy() == demo.PAD_ID).all()
    assert (tgt_in[:, 0].numpy() == demo.BOS_ID).all()
    assert (tgt_out[:, -1].numpy() == demo.EOS_ID).all()
    assert demo.decode_ids(tgt_out[0].numpy()) == "1998-04-03"
    assert tgt_in[0, 1:].tolist() == tgt_out[0, :-1].tolist()


def test_text_heat_map_has_a_row_per_output_step_and_a_column_per_source_character():
    source, output = "3 apr 98", "1998-04-03"
    weights = np.random.default_rng(0).dirichlet(np.ones(len(source)), size=len(output) + 1)
    weights[0] = np.eye(len(source))[2]                                   # all on one character
    lines = demo.text_heat_map(weights, source, output).split("\n")
    assert len(lines) == 1 + len(output) + 1                               # header, steps, EOS
    assert lines[0].endswith(source)
    offset = len(lines[0]) - len(source)
    for label, line in zip(list(output) + ["EOS"], lines[1:]):
        shades = line[offset:]
        assert line[:offset].strip() == label
        assert len(shades) == len(source) and set(shades) <= set(demo.SHADES)
    assert lines[1][offset:] == "  @     "
    with pytest.raises(ValueError, match="do not match a source of 8 characters"):
        demo.text_heat_map(weights[:, :5], source, output)


def test_the_attention_map_falls_back_to_text_without_matplotlib(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)                  # import fails
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    lines = []
    path = tmp_path / "attention.png"
    demo.run_demo("rnn", steps=1, held_out_examples=8, plot_path=str(path), log=lines.append)
    text = "\n".join(lines)
    assert "matplotlib is not installed" in text and not path.exists()
    assert "rows: output, columns: source" in text


def test_plot_attention_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib (an optional dependency) is not "
                                             "installed, so there is no PNG path to test")
    demo.run_demo("both", steps=1, held_out_examples=8, plot_path=str(tmp_path / "map.png"),
                  log=lambda line: None)
    for kind in demo.MODEL_KINDS:
        written = tmp_path / f"map-{kind}.png"
        assert written.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_main_runs_the_demo_from_the_command_line(capsys):
    assert demo.main(["--model", "rnn", "--steps", "1", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "rnn: exact match" in printed and "rows: output, columns: source" in printed
    with pytest.raises(SystemExit):
        demo.main(["--model", "lstm"])
    with pytest.raises(SystemExit):
        demo.main(["--steps", "0"])


# Short runs on one style ("3 April 1998": reorder, and turn month names into numbers), as
# (steps, batch size, learning rate). Exact match by chance is about 0 (ten characters, and
# the held-out dates were never seen); measured on two CPU cores: rnn 82% in 10 s, transformer
# 84% in 9 s (seeds 1 and 2: 58% and 79%, 82% and 80%).
SHORT_RUNS = {"rnn": (100, 32, 2e-2), "transformer": (150, 32, 5e-3)}
SHORT_RUN_THRESHOLD = 0.5


@pytest.mark.parametrize("kind", demo.MODEL_KINDS)
def test_a_short_run_translates_most_held_out_dates(kind):
    steps, batch_size, learning_rate = SHORT_RUNS[kind]
    styles = ["day month year"]
    rng = np.random.default_rng(0)
    train_dates, held_out_dates = demo.split_dates(rng)
    held_out = demo.sample_pairs(held_out_dates, 200, rng, styles)
    tn.manual_seed(0)
    model = demo.build_model(kind)
    demo.train_model(model, train_dates, steps, rng, batch_size, learning_rate,
                     warmup_steps=10, styles=styles, log=lambda line: None)
    assert demo.exact_match(model, held_out) >= SHORT_RUN_THRESHOLD


def test_the_tinynlm_command_runs_the_demo(capsys):
    from tinynlm import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["translate-demo", "--help"])
    assert exit_info.value.code == 0
    assert "tinynlm translate-demo" in capsys.readouterr().out
