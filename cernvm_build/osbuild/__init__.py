"""Operating-system trees for μCernVM to boot: a Debian release built from verified Debian packages."""
