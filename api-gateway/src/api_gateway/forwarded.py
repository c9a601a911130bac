"""Who the client is: the TCP peer, unless that peer is a proxy this gateway trusts
(`GATEWAY_TRUSTED_PROXIES`); then the right-most `X-Forwarded-For` hop no trusted proxy sits at.

Only the right end of `X-Forwarded-For` can be believed: each proxy appends the address it saw, so
everything left of the first untrusted hop was written by that untrusted party and may be a lie.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    """`"10.0.0.0/8, 127.0.0.1, ::1"` -> networks; an address alone is a network of one.
    Raises ValueError naming the entry that is neither."""
    networks: list[Network] = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        try:
            networks.append(ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or CIDR network") from None
    return tuple(networks)


def _address(text: str) -> Address | None:
    """The address a hop names, IPv4-mapped IPv6 read as IPv4; None when malformed."""
    try:
        address = ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrustedProxies:
    """The proxies whose `X-Forwarded-For` is believed; none by default."""

    def __init__(self, networks: Sequence[Network] = ()) -> None:
        self.networks = tuple(networks)

    def trusts(self, address: Address) -> bool:
        return any(address in network for network in self.networks)

    def client_of(self, peer: str, forwarded_for: Iterable[str]) -> str:
        """The client's address for a request from `peer` carrying these `X-Forwarded-For`
        header values (in the order received). Walking from the right, trusted hops are
        skipped and the first untrusted one is the client; a malformed hop ends the walk at the
        last address known good (a proxy that vouched for it). Every hop trusted: the left-most."""
        peer_address = _address(peer)
        if peer_address is None or not self.networks or not self.trusts(peer_address):
            return peer
        client = peer_address
        hops = [hop for value in forwarded_for for hop in value.split(",")]
        for hop in reversed(hops):
            address = _address(hop)
            if address is None:
                break
            client = address
            if not self.trusts(address):
                break
        return str(client)
