"""Reference containers whose root trees come from CernVM-FS.

``source`` (tree sources: local directory, CernVM-FS snapshot) → ``layer`` (deterministic tar, gzip)
→ ``oci`` (OCI layout, oci-archive, docker-archive), ``apptainer`` (sandbox), ``thin`` (DUCC thin
image), ``hub`` (DUCC layout in a CernVM-FS repository); ``verify`` checks an image against the
snapshot it names. ``build`` ties them together.
"""
