"""The `tuneloop` command line."""
