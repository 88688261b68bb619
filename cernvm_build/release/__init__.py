"""Releases: build every profile's images and containers, index and sign them, publish, verify, rebuild.

``index.py`` is the machine-readable release index (the one source the downloads page, the news post,
``release verify`` and ``release rebuild`` read); ``sums.py`` SHA256SUMS and its signature; ``notes.py``
release notes from the profiles and the previous index; ``build.py`` the parallel build; ``publish.py``
the safe-order upload; ``verify.py`` the archivist's check.
"""
