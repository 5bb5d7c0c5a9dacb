"""wxnet.cli."""
