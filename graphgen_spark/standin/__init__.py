"""Offline stand-in for an OpenAI-compatible chat endpoint.

NOT a language model: answers are deterministic rules over the request (see
:mod:`.rules`), with injectable latency, concurrency limits and faults (see
:mod:`.faults`). It lets tests, CI and the demo exercise the real ``openai``
client over real HTTP on machines that cannot run a model.

Script file format (``StandinOptions.script`` / ``--script``)::

    {"rules": [{"match": "substring of the last user message",
                "model": "exact-model-name",            # optional
                "content": "reply text",                # optional
                "top_logprobs": [["yes", -0.1], ...],   # optional, first position
                "status": 400, "message": "...",        # optional scripted HTTP error
                "no_logprobs": true}]}                  # optional

The first matching rule wins; unmatched requests use the built-in rules.
"""

from . import extraction as _extraction  # noqa: F401  (registers the task handlers)
from . import generate as _generate  # noqa: F401
from . import quiz as _quiz  # noqa: F401
from .commandline import main
from .options import ALLOWED_FAULTS, DEFAULT_FAULTS, OptionError, StandinOptions
from .rules import HANDLERS, register_handler
from .server import BANNER, StandinServer

__all__ = [
    "ALLOWED_FAULTS",
    "BANNER",
    "DEFAULT_FAULTS",
    "HANDLERS",
    "OptionError",
    "StandinOptions",
    "StandinServer",
    "main",
    "register_handler",
]
