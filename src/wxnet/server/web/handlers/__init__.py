"""The web API's handlers by concern, as mixins over :class:`wxnet.server.web.base.WebBase`;
the route table is in :func:`wxnet.server.web.api.setup_web`."""
