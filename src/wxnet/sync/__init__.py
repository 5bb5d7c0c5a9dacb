"""wxnet.sync."""
