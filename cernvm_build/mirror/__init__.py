"""Package repositories (yum, apt) and static trees mirrored to S3: verified, incremental, safe order."""
