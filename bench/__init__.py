"""Load benchmark of the leads API: see bench/README.md."""
