"""wxnet.classify."""
