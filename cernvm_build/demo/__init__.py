"""The embedded demo: a tiny OS tree from Debian packages, published into a local CernVM-FS repository.

It stands in for cernvm-prod.cern.ch so that ``make run`` and the tests exercise the whole flow — build,
publish, boot, SSH — on one machine without the internet.
"""

DEMO_FQRN = "demo.cernvm.test"
