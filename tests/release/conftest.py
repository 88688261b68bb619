"""The release publish's Ceph RADOS Gateway is the session one registered in tests/conftest.py."""
