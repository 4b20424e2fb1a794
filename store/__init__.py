"""Everything that persists, one module per store."""
