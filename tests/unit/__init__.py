"""Pure units: no server, no mount; a temp directory and local processes at most."""
