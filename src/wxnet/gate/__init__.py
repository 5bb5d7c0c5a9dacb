"""wxnet.gate."""
