"""A small MQTT 3.1.1 and 5.0 broker on loopback, for the demo and the tests where mosquitto is not installed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from dataclasses import dataclass, field
from types import TracebackType

logger = logging.getLogger(__name__)

MAX_PACKET = 1 << 20  # bytes of remaining length; a larger packet closes the connection
MAX_BUFFERED = 64 << 20  # bytes waiting for one subscriber; past this it is too slow and is disconnected
CONNECT_TIMEOUT_S = 10.0  # a socket that sends no CONNECT within this is closed

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14
REQUIRED_FLAGS = {PUBREL: 2, SUBSCRIBE: 2, UNSUBSCRIBE: 2}  # every other packet but PUBLISH has flags 0


class MalformedPacket(ValueError):
    """The client broke the protocol; its connection is closed."""


def check(ok: object, why: str) -> None:
    if not ok:
        raise MalformedPacket(why)


class Reader:
    """Bounds-checked reads from one packet's body."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        check(self.pos + n <= len(self.data), "the packet ends early")
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def uint(self, width: int) -> int:
        return int.from_bytes(self.take(width), "big")

    def varint(self) -> int:
        value = 0
        for shift in (0, 7, 14, 21):
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
        why = "a variable byte integer is longer than 4 bytes"
        raise MalformedPacket(why)

    def binary(self) -> bytes:
        return self.take(self.uint(2))

    def string(self) -> str:
        text = self.binary().decode()  # invalid UTF-8 raises UnicodeDecodeError, a ValueError
        check("\x00" not in text, "a string contains U+0000")
        return text

    def skip_properties(self) -> None:
        """A v5 property block is skipped whole by its length: nothing in it changes what this broker does."""
        self.take(self.varint())


def packet(kind: int, flags: int, body: bytes) -> bytes:
    head, n = bytearray([kind << 4 | flags]), len(body)
    while True:  # the remaining length, 7 bits a byte, low bits first
        head.append(n & 0x7F | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(head) + body


def topic_matches(topic_filter: str, topic: str) -> bool:
    """`+` matches one level, a final `#` any number of levels including none; a wildcard at the first level
    never matches a `$` topic (spec 4.7.2), so `#` does not see `$SYS/...`."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    levels, parts = topic.split("/"), topic_filter.split("/")
    for i, part in enumerate(parts):
        if part == "#":
            return True
        if i >= len(levels) or part not in ("+", levels[i]):
            return False
    return len(parts) == len(levels)


def valid_topic(topic: str) -> bool:
    return bool(topic) and "+" not in topic and "#" not in topic


def valid_filter(topic_filter: str) -> bool:
    parts = topic_filter.split("/")
    return bool(topic_filter) and all(
        ("+" not in p or p == "+") and ("#" not in p or (p == "#" and i == len(parts) - 1)) for i, p in enumerate(parts)
    )


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(eq=False)
class Session:
    writer: asyncio.StreamWriter
    client_id: str
    v5: bool
    will: Message | None
    subscriptions: dict[str, int] = field(default_factory=dict)  # topic filter -> granted QoS
    qos2_pending: set[int] = field(default_factory=set)  # QoS 2 ids routed but not yet released by PUBREL
    last_id: int = 0

    def send(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)

    def deliver(self, msg: Message, qos: int, retain: bool) -> None:
        topic = msg.topic.encode()
        head = len(topic).to_bytes(2, "big") + topic
        if qos:
            self.last_id = self.last_id % 0xFFFF + 1
            head += self.last_id.to_bytes(2, "big")
        if self.v5:
            head += b"\x00"  # no properties: those of the publisher are not passed on
        self.send(packet(PUBLISH, qos << 1 | retain, head + msg.payload))
        # Writes never block the publisher, so a subscriber that stops reading would grow memory without bound.
        if self.writer.transport.get_write_buffer_size() > MAX_BUFFERED:
            logger.debug("%s is not reading; disconnecting it", self.client_id)
            self.writer.close()


class EmbeddedBroker:
    """An MQTT broker on an asyncio loop in a daemon thread; `port` is the bound one once `start()` returns.
    Not supported: persistent sessions (session present is always 0), authentication, QoS 2 towards subscribers
    (granted QoS is at most 1), and the v5 properties and subscription options: they are skipped, so publishers'
    properties are not passed on and will delay, message expiry, topic aliases and no-local have no effect."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, max_packet: int = MAX_PACKET) -> None:
        self.host, self.port, self.max_packet = host, port, max_packet
        self._sessions: dict[str, Session] = {}
        self._retained: dict[str, Message] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> EmbeddedBroker:
        """Bind here, so a taken address raises OSError to the caller, then serve from the thread."""
        loop = self._loop = asyncio.new_event_loop()
        try:
            self._server = loop.run_until_complete(asyncio.start_server(self._client, self.host, self.port))
        except OSError:
            loop.close()
            raise
        self.port = self._server.sockets[0].getsockname()[1]
        self._thread = threading.Thread(target=loop.run_forever, name="embedded-mqtt-broker", daemon=True)
        self._thread.start()
        logger.debug("embedded broker listening on %s:%s", self.host, self.port)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        self._loop.close()
        self._thread = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()  # is_serving() turns False, so the connections closed below send no will
        await asyncio.sleep(0)  # lets connections accepted just now register before they are cancelled
        while self._tasks:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _read(self, reader: asyncio.StreamReader) -> tuple[int, int, bytes]:
        head = await reader.readexactly(2)
        while head[-1] & 0x80 and len(head) < 5:  # the remaining length takes 1 to 4 bytes
            head += await reader.readexactly(1)
        length = Reader(head[1:]).varint()
        check(length <= self.max_packet, "a packet over the size limit")
        return head[0] >> 4, head[0] & 0x0F, await reader.readexactly(length)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        session: Session | None = None
        try:
            kind, _, body = await asyncio.wait_for(self._read(reader), CONNECT_TIMEOUT_S)
            check(kind == CONNECT, "the first packet must be CONNECT")
            session, keepalive = self._connect(Reader(body), writer)
            while session is not None:  # the spec allows 1.5 keepalive periods of silence; 0 turns the check off
                kind, flags, body = await asyncio.wait_for(self._read(reader), keepalive * 1.5 or None)
                if not self._handle(session, kind, flags, Reader(body)):
                    break
                await writer.drain()
        except (ValueError, EOFError, OSError, asyncio.TimeoutError) as exc:
            logger.debug("closing %s: %r", session.client_id if session else writer.get_extra_info("peername"), exc)
        finally:
            self._tasks.discard(task)
            if session is not None and self._sessions.get(session.client_id) is session:  # not taken over
                del self._sessions[session.client_id]
                # A connection that ends without DISCONNECT (or with v5 reason 0x04) sends its will.
                if session.will is not None and self._server is not None and self._server.is_serving():
                    self._route(session.will)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def _connect(self, r: Reader, writer: asyncio.StreamWriter) -> tuple[Session | None, int]:
        name, level = r.string(), r.uint(1)
        if name != "MQTT" or level not in (4, 5):
            writer.write(packet(CONNACK, 0, b"\x00\x01"))  # unacceptable protocol version, in the 3.1.1 layout
            return None, 0
        v5, flags, keepalive = level == 5, r.uint(1), r.uint(2)
        will_qos = (flags >> 3) & 3
        bad_will = not flags & 0x04 and flags & 0x38  # will QoS or retain set without a will
        bad_password = not v5 and (flags & 0xC0) == 0x40  # 3.1.1 has no password without a user name
        check(not (flags & 0x01 or will_qos == 3 or bad_will or bad_password), f"CONNECT flags {flags:#x}")
        if v5:
            r.skip_properties()
        client_id, will = r.string(), None
        if flags & 0x04:
            if v5:
                r.skip_properties()  # the will's own properties come before its topic
            will = Message(r.string(), r.binary(), will_qos, bool(flags & 0x20))
            check(valid_topic(will.topic), "invalid will topic")
        for present in (flags & 0x80, flags & 0x40):  # user name and password: any are accepted on loopback
            if present:
                r.binary()
        check(r.pos == len(r.data), "bytes after the CONNECT payload")
        if not client_id:
            if not v5 and not flags & 0x02:  # 3.1.1 accepts an empty client id only with a clean session
                writer.write(packet(CONNACK, 0, b"\x00\x02"))
                return None, 0
            client_id = f"embedded-{writer.get_extra_info('peername')[1]}"  # the client's port: unique on loopback
        old = self._sessions.pop(client_id, None)
        if old is not None:  # takeover: the old connection ends without DISCONNECT, so its will goes out
            if old.v5:
                old.send(packet(DISCONNECT, 0, b"\x8e"))  # session taken over
            old.writer.close()
            if old.will is not None:
                self._route(old.will)
        session = self._sessions[client_id] = Session(writer, client_id, v5, will)
        # Session present is always 0: no state outlives a connection. v5 adds an empty property block.
        writer.write(packet(CONNACK, 0, b"\x00\x00\x00" if v5 else b"\x00\x00"))
        logger.debug("%s connected (MQTT %s, keepalive %s s)", client_id, "5" if v5 else "3.1.1", keepalive)
        return session, keepalive

    def _handle(self, s: Session, kind: int, flags: int, r: Reader) -> bool:
        """Act on one packet; False ends the connection."""
        check(kind == PUBLISH or flags == REQUIRED_FLAGS.get(kind, 0), "reserved flags set")
        if kind == PUBLISH:
            self._publish(s, flags, r)
        elif kind == SUBSCRIBE:
            self._subscribe(s, r)
        elif kind == UNSUBSCRIBE:
            self._unsubscribe(s, r)
        elif kind == PUBREL:
            s.qos2_pending.discard(packet_id := r.uint(2))
            s.send(packet(PUBCOMP, 0, packet_id.to_bytes(2, "big")))
        elif kind == PINGREQ:
            s.send(packet(PINGRESP, 0, b""))
        elif kind == DISCONNECT:
            if not (s.v5 and r.pos < len(r.data) and r.uint(1) == 0x04):  # v5 reason 0x04: disconnect with will message
                s.will = None
            return False
        else:  # subscribers' PUBACKs need no answer: nothing is redelivered
            check(kind == PUBACK, f"unexpected packet type {kind}")
        return True

    def _publish(self, s: Session, flags: int, r: Reader) -> None:
        qos, topic = (flags >> 1) & 3, r.string()
        check(qos < 3 and valid_topic(topic), "PUBLISH with QoS 3 or an invalid topic")
        packet_id = r.uint(2) if qos else 0
        check(packet_id or not qos, "packet id 0")
        if s.v5:
            r.skip_properties()
        msg = Message(topic, r.data[r.pos :], qos, bool(flags & 1))
        if qos < 2 or packet_id not in s.qos2_pending:  # a resent QoS 2 publish is not routed twice
            self._route(msg)
        if qos == 2:
            s.qos2_pending.add(packet_id)
        if qos:
            s.send(packet(PUBACK if qos == 1 else PUBREC, 0, packet_id.to_bytes(2, "big")))

    def _route(self, msg: Message) -> None:
        if msg.retain and msg.payload:
            self._retained[msg.topic] = msg
        elif msg.retain:  # an empty retained payload deletes the retained message
            self._retained.pop(msg.topic, None)
        # Delivery happens synchronously on the loop, in arrival order, so each subscriber sees publish order.
        for s in list(self._sessions.values()):
            granted = [qos for f, qos in s.subscriptions.items() if topic_matches(f, msg.topic)]
            if granted:  # overlapping filters give one copy at the highest granted QoS; live messages are not retained
                s.deliver(msg, min(msg.qos, max(granted)), False)

    def _subscribe(self, s: Session, r: Reader) -> None:
        packet_id = r.uint(2)
        if s.v5:
            r.skip_properties()
        codes, accepted = bytearray(), []
        while r.pos < len(r.data):
            topic_filter, options = r.string(), r.uint(1)
            # Bits 0-1 are the QoS; v5's no-local, retain-as-published and retain-handling bits are ignored.
            check((options & 3) < 3 and not options & (0xC0 if s.v5 else 0xFC), "subscription options")
            if not valid_filter(topic_filter):
                codes.append(0x8F if s.v5 else 0x80)  # topic filter invalid; 3.1.1 has only "failure"
                continue
            granted = s.subscriptions[topic_filter] = min(options & 3, 1)
            codes.append(granted)
            accepted.append((topic_filter, granted))
        check(codes, "SUBSCRIBE without a topic filter")
        s.send(packet(SUBACK, 0, packet_id.to_bytes(2, "big") + (b"\x00" if s.v5 else b"") + bytes(codes)))
        # Retained messages follow the SUBACK with the retain flag set, so the client can tell them from live ones.
        for topic_filter, granted in accepted:
            for msg in list(self._retained.values()):
                if topic_matches(topic_filter, msg.topic):
                    s.deliver(msg, min(msg.qos, granted), True)

    def _unsubscribe(self, s: Session, r: Reader) -> None:
        packet_id = r.uint(2)
        if s.v5:
            r.skip_properties()
        codes = bytearray()
        while r.pos < len(r.data):
            codes.append(0x00 if s.subscriptions.pop(r.string(), None) else 0x11)  # 0x11: no subscription existed
        check(codes, "UNSUBSCRIBE without a topic filter")
        s.send(packet(UNSUBACK, 0, packet_id.to_bytes(2, "big") + (b"\x00" + bytes(codes) if s.v5 else b"")))
