"""wxnet.lab."""
