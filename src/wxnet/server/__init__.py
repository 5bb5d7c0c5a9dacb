"""wxnet.server."""
