"""The Bildsluss capture-PC agent: one card from insert to wipe.

The card's path: detect -> mount -> scan -> identify -> decide -> strip ->
upload -> verify -> wipe. Each stage is one module with plain-data inputs and
outputs (see :mod:`agent.card.model`); :mod:`agent.card.pipeline` composes them.
"""

from bildsluss_common import __version__  # noqa: F401  (one version for both programs)
