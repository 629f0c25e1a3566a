"""The `host:` section of the configuration: how documents name this host."""

from typing import Annotated, Optional

import msgspec
from msgspec import Meta


class HostConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # Overrides host.name; None means the kernel's hostname.
    name: Optional[Annotated[str, Meta(min_length=1, max_length=255)]] = None
