"""Real mounts read by real programs (marker `fuse`), with the no-mount tests that
share their files' story; most run over SeaweedFS too."""
