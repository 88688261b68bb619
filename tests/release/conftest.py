"""The mirror's Ceph RADOS Gateway (one per test session), for the release publish."""

from tests.mirror.conftest import rgwserver  # noqa: F401
