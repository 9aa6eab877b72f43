"""``python -m tinynlm``: the demo training run."""

from .demo import main

main()
