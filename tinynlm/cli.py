"""The ``tinynlm`` command: ``train``, ``generate`` and ``eval`` sub-commands (also
``python -m tinynlm``). A thin layer over :mod:`tinynlm.train` and :mod:`tinynlm.models`."""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys

import numpy as np

from .plotting import plot_losses
from .train import MODELS, PRESETS, TrainConfig, evaluate, load_checkpoint, train


def _add_train_arguments(parser):
    defaults = TrainConfig()
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny",
                        help="a tested combination of the settings below (default: tiny)")
    parser.add_argument("--model", choices=MODELS, help=f"model kind (preset: {defaults.model})")
    parser.add_argument("--data", help="a UTF-8 text file (default: Python's documentation "
                                       "topics, built into every Python install)")
    parser.add_argument("--tokenizer", choices=("char", "byte"), help="characters or UTF-8 bytes")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--steps", type=int, help="optimizer steps")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--block-size", type=int, help="context length in tokens")
    parser.add_argument("--n-layer", type=int)
    parser.add_argument("--n-head", type=int, help="attention heads (gpt)")
    parser.add_argument("--n-embd", type=int, help="embedding width")
    parser.add_argument("--hidden-size", type=int, help="recurrent state width (lstm/gru/rnn)")
    parser.add_argument("--dropout", type=float)
    parser.add_argument("--lr", dest="learning_rate", type=float, help="peak learning rate")
    parser.add_argument("--min-lr", dest="min_learning_rate", type=float,
                        help="learning rate at the end of the cosine decay")
    parser.add_argument("--warmup-steps", type=int)
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--grad-clip", type=float, help="clip the gradient norm to this")
    parser.add_argument("--eval-interval", type=int, help="evaluate and save every N steps")
    parser.add_argument("--eval-batches", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--out", help="checkpoint directory (default: out)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the checkpoint in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--sample-tokens", type=int, default=300,
                        help="characters of sample text printed at the end (0: none)")
    parser.add_argument("--plot", metavar="PNG", help="save the train and validation loss curve "
                                                      "(needs matplotlib)")


def config_from_arguments(args) -> TrainConfig:
    """The preset's settings, overridden by every flag given on the command line."""
    values = dict(PRESETS[args.preset])
    for field in dataclasses.fields(TrainConfig):
        given = getattr(args, field.name, None)
        if given is not None:
            values[field.name] = given
    return TrainConfig(**values)


def _sample(model, tokenizer, prompt, max_new_tokens, temperature, top_k, top_p, seed, device):
    """Stream generated text to stdout as it is produced."""
    import tinynlm as tn

    ids = tn.tensor(tokenizer.encode(prompt)[None, :], device=device)   # (1, T)
    generator = np.random.default_rng(seed)
    sys.stdout.write(prompt)
    for token in model.generate_tokens(ids, max_new_tokens, temperature=temperature,
                                       top_k=top_k, top_p=top_p, generator=generator):
        sys.stdout.write(tokenizer.decode([int(token[0])]))
        sys.stdout.flush()
    sys.stdout.write("\n")


def command_train(args):
    config = config_from_arguments(args)
    train(config, resume=args.resume, progress=not args.no_progress)
    model, tokenizer, config, _, history = load_checkpoint(config.out)
    if args.plot:
        print(f"loss curve: {plot_losses(history, args.plot)}")
    if args.sample_tokens > 0:
        print("sample:")
        _sample(model, tokenizer, _default_prompt(tokenizer), args.sample_tokens, 0.8, None,
                None, config.seed, config.device)


def _default_prompt(tokenizer) -> str:
    """A newline when the vocabulary has one, else its first character."""
    try:
        tokenizer.encode("\n")
        return "\n"
    except ValueError:
        return tokenizer.decode([0])


def command_generate(args):
    model, tokenizer, config, _, _ = load_checkpoint(args.checkpoint, args.device)
    _sample(model, tokenizer, args.prompt, args.max_new_tokens, args.temperature, args.top_k,
            args.top_p, args.seed, config.device)


def command_eval(args):
    from .data import load_corpus, split_train_val

    model, tokenizer, config, _, _ = load_checkpoint(args.checkpoint, args.device)
    if args.batches is not None:
        config.eval_batches = args.batches
    text = load_corpus(args.data if args.data else config.data)
    ids = tokenizer.encode(text)
    if not args.data:
        _, ids = split_train_val(ids, val_fraction=0.1)  # the run's own held-out split
    loss = evaluate(model, ids, config)
    print(f"loss {loss:.4f} nats per token, {loss / math.log(2):.4f} bits per token, "
          f"perplexity {math.exp(loss):.3f}")


def build_parser():
    parser = argparse.ArgumentParser(prog="tinynlm", description="Train, evaluate and sample "
                                     "character-level neural language models with tinynlm.")
    commands = parser.add_subparsers(dest="command", required=True)
    train_parser = commands.add_parser("train", help="train a language model",
                                       description="Train a character-level language model and "
                                       "save checkpoints to --out.")
    _add_train_arguments(train_parser)
    train_parser.set_defaults(run=command_train)

    generate = commands.add_parser("generate", help="sample text from a checkpoint",
                                   description="Sample text from a trained model, streaming it.")
    generate.add_argument("--checkpoint", default="out", help="checkpoint directory")
    generate.add_argument("--prompt", default="\n")
    generate.add_argument("--max-new-tokens", type=int, default=500)
    generate.add_argument("--temperature", type=float, default=0.8)
    generate.add_argument("--top-k", type=int)
    generate.add_argument("--top-p", type=float)
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--device")
    generate.set_defaults(run=command_generate)

    evaluate_parser = commands.add_parser("eval", help="loss, bits per character and perplexity",
                                          description="Evaluate a checkpoint on its held-out "
                                          "split or on a text file.")
    evaluate_parser.add_argument("--checkpoint", default="out", help="checkpoint directory")
    evaluate_parser.add_argument("--data", help="a UTF-8 text file (default: the held-out split)")
    evaluate_parser.add_argument("--batches", type=int, help="at most this many batches")
    evaluate_parser.add_argument("--device")
    evaluate_parser.set_defaults(run=command_eval)

    demo = commands.add_parser("translate-demo", add_help=False,
                               help="train seq2seq models with attention to translate dates "
                                    "(see `tinynlm translate-demo --help`)")
    demo.set_defaults(run=command_translate_demo)
    return parser


def command_translate_demo(args):
    from . import translate_demo

    status = translate_demo.main(args.rest, prog="tinynlm translate-demo")
    if status:
        raise SystemExit(status)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if argv[:1] == ["translate-demo"]:  # its own options are parsed by the demo itself
        args = parser.parse_args(argv[:1])
        args.rest = argv[1:]
    else:
        args = parser.parse_args(argv)
    try:
        args.run(args)
    except KeyboardInterrupt:
        return 130
    except (FileNotFoundError, ValueError, FloatingPointError, RuntimeError) as error:
        print(f"tinynlm: error: {error}", file=sys.stderr)
        return 1
    return 0
