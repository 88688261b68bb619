"""The command-line interface: the only place that prints.

``main.py`` is ``cernvm-build``, ``launch.py`` is ``cernvm-launch``. Each command area lives in its own
module with a ``register(subparsers)`` function; ``app.py`` holds what they share (output, errors,
exit codes).
"""
