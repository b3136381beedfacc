"""Command-line shells over the library: each parses flags into a config and makes one library call."""
