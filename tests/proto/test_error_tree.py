"""Every error wxnet raises on purpose sits in the one tree under ``WxnetError``, where
the tree drawn in :mod:`wxnet.proto.errors` puts it."""

from __future__ import annotations

import pytest

from wxnet.client.errors import ClientError, TransportError
from wxnet.client.mediaplan import UploadStalled
from wxnet.client.outbox import OutboxStateError
from wxnet.client.resolver import DnsFailure
from wxnet.client.rows import ProfileError
from wxnet.netns import NetnsError
from wxnet.proto.dnswire import DnsWireError
from wxnet.proto.errors import LocalProtocolError, RemoteProtocolError, WxnetError
from wxnet.proto.newgetdns import NewDnsError
from wxnet.proto.web import WebProtocolError
from wxnet.sync.media import MediaError


@pytest.mark.parametrize(
    ("error", "parent"),
    [
        (DnsWireError, RemoteProtocolError),
        (NewDnsError, RemoteProtocolError),
        (WebProtocolError, RemoteProtocolError),
        (OutboxStateError, LocalProtocolError),
        (UploadStalled, TransportError),
        (ProfileError, ClientError),
        (DnsFailure, ClientError),
        (MediaError, WxnetError),
        (NetnsError, WxnetError),
    ],
)
def test_error_sits_in_the_tree(error: type[Exception], parent: type[Exception]) -> None:
    assert issubclass(error, parent) and issubclass(error, WxnetError)
    import wxnet.proto.errors as errors

    assert f"── {error.__name__} " in (errors.__doc__ or "")  # drawn in the tree
