"""The CernVM appliance toolkit.

One package, one subpackage per stage: ``profile`` → ``cvmfs`` → ``bootloader``/``image``,
``container``, ``launch``; ``site``, ``mirror`` and ``release`` around them; ``cli`` does the talking.
"""

__version__ = "0.1.0"
