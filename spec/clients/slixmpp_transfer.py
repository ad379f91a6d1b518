#!/usr/bin/python3
# One XEP-0065 file transfer between two slixmpp clients, through the
# server's SOCKS5 bytestreams proxy, as slixmpp's own plugin (xep_0065)
# makes it: the initiator finds the proxy through the server's disco#items
# and its streamhost query, offers it to the target, connects and
# activates, writes the bytes and ends with a half-close (write_eof), as
# slixmpp's example sender does; the target receives until the stream
# closes, and the initiator's stream must then end cleanly too. Each
# prints what it sent or received:
#
#   streamhost JID HOST PORT
#   initiator: sent N bytes, sha256 HEX
#   target: received N bytes, sha256 HEX
#
# With SLIXMPP_TRANSFER_PROGRESS=1 in the environment, the target also
# prints "progress N" (bytes so far) about twice a second (make try).
#
# It compares nothing: the caller does (spec/slixmpp_spec.lua). It exits
# 1 when the transfer fails or does not end within the timeout, and 2 on
# a usage error. It does not speak TLS: the server is on loopback.
#
# Usage: slixmpp_transfer.py C2S_PORT INITIATOR_JID PASSWORD TARGET_JID
#        PASSWORD BYTES [SEED [TIMEOUT]]
# SPDX-License-Identifier: MIT
import asyncio
import hashlib
import logging
import os
import random
import sys
import time

import slixmpp

# What the initiator hands to the plugin's write() at a time.
CHUNK = 65536
PROGRESS = os.environ.get("SLIXMPP_TRANSFER_PROGRESS") == "1"


class Client(slixmpp.ClientXMPP):
    """A client with the plugins of a file transfer, whose session_start
    and stream ends are futures to await."""

    def __init__(self, jid, password):
        super().__init__(jid, password)
        self.register_plugin("xep_0030")
        # The target accepts every offer, as slixmpp's example receiver.
        self.register_plugin("xep_0065", {"auto_accept": True})
        loop = asyncio.get_running_loop()
        self.started = loop.create_future()
        self.closed = loop.create_future()
        self.received = 0
        self.digest = hashlib.sha256()
        self.progress_at = 0.0
        self.add_event_handler("session_start", self._on_start)
        self.add_event_handler("failed_auth", self._on_failed_auth)
        self.add_event_handler("socks5_data", self._on_data)
        self.add_event_handler("socks5_closed", self._on_closed)

    def _on_start(self, _):
        if not self.started.done():
            self.started.set_result(True)

    def _on_failed_auth(self, _):
        if not self.started.done():
            self.started.set_exception(RuntimeError(f"{self.boundjid.bare}: authentication failed"))

    def _on_data(self, data):
        self.received += len(data)
        self.digest.update(data)
        if PROGRESS and time.monotonic() - self.progress_at >= 0.5:
            self.progress_at = time.monotonic()
            print(f"progress {self.received}", flush=True)

    def _on_closed(self, exc):
        if not self.closed.done():
            self.closed.set_result(exc)

    def start(self, port):
        self.connect(("127.0.0.1", port), force_starttls=False, disable_starttls=True)


async def transfer(port, initiator, target, size, seed):
    for client in (initiator, target):
        client.start(port)
    await asyncio.gather(initiator.started, target.started)

    plugin = initiator["xep_0065"]
    # handshake() would discover them itself; done first to print them.
    proxies = await plugin.discover_proxies()
    if not proxies:
        raise RuntimeError("no bytestreams proxy found through the server's disco#items")
    for jid, (host, proxy_port) in proxies.items():
        print(f"streamhost {jid} {host} {proxy_port}", flush=True)
    sock = await plugin.handshake(target.boundjid)
    if sock is None:
        raise RuntimeError("no bytestream: the target chose no streamhost the initiator knows")

    data = random.Random(seed).randbytes(size)
    for offset in range(0, size, CHUNK):
        await sock.write(data[offset:offset + CHUNK])
    sock.transport.write_eof()
    print(f"initiator: sent {size} bytes, sha256 {hashlib.sha256(data).hexdigest()}", flush=True)

    exc = await target.closed
    if exc is not None:
        raise RuntimeError(f"the target's stream ended on an error: {exc!r}")
    print(f"target: received {target.received} bytes, sha256 {target.digest.hexdigest()}", flush=True)
    # The target's close reaches the initiator too: its stream ends, cleanly.
    exc = await initiator.closed
    if exc is not None:
        raise RuntimeError(f"the initiator's stream ended on an error: {exc!r}")


async def main(argv):
    port = int(argv[1])
    size = int(argv[6])
    seed = int(argv[7]) if len(argv) > 7 else 1
    timeout = float(argv[8]) if len(argv) > 8 else 60
    initiator = Client(argv[2], argv[3])
    target = Client(argv[4], argv[5])
    try:
        await asyncio.wait_for(transfer(port, initiator, target, size, seed), timeout)
    except asyncio.TimeoutError:
        print(f"slixmpp_transfer: timed out after {timeout:g} s", file=sys.stderr)
        return 1
    except Exception as exc:
        print(f"slixmpp_transfer: {exc}", file=sys.stderr)
        return 1
    finally:
        # disconnect() returns None for a client that never connected.
        ends = [client.disconnect(wait=1) for client in (initiator, target)]
        await asyncio.gather(*(end for end in ends if end is not None))
    return 0


if __name__ == "__main__":
    if len(sys.argv) not in (7, 8, 9):
        print("usage: slixmpp_transfer.py C2S_PORT INITIATOR_JID PASSWORD "
              "TARGET_JID PASSWORD BYTES [SEED [TIMEOUT]]", file=sys.stderr)
        sys.exit(2)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(asyncio.run(main(sys.argv)))
