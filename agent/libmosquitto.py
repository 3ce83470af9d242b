"""The few functions of libmosquitto (the C client library of Eclipse Mosquitto, Debian's `libmosquitto1`) that
the readings subscription needs, bound with ctypes.

A ctypes call releases the GIL for as long as it runs, so libmosquitto's network loop, which reads packets,
decodes them and sends the acknowledgements, runs beside the scoring thread; Python runs only in the
callbacks. `load()` raises LibraryUnavailable where the library is missing or older than 2.0.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from typing import Any

OPT_PROTOCOL_VERSION = 1
OPT_TCP_NODELAY = 11
OPT_TLS_USE_OS_CERTS = 13
PROTOCOL_VERSIONS = {"5": 5, "3.1.1": 4}
PROP_SESSION_EXPIRY_INTERVAL = 17
PROP_MAXIMUM_PACKET_SIZE = 39
ERR_SUCCESS = 0
ERR_NO_CONN = 4
SUBACK_FAILURE = 0x80  # a granted QoS at or above this is a refusal


class LibraryUnavailable(RuntimeError):
    """libmosquitto (>= 2.0) cannot be loaded on this host."""


class Message(ctypes.Structure):
    _fields_ = (
        ("mid", ctypes.c_int),
        ("topic", ctypes.c_char_p),
        ("payload", ctypes.c_void_p),
        ("payloadlen", ctypes.c_int),
        ("qos", ctypes.c_int),
        ("retain", ctypes.c_bool),
    )


ON_CONNECT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int)
ON_DISCONNECT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int)
ON_MESSAGE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(Message))
ON_SUBSCRIBE = ctypes.CFUNCTYPE(
    None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_int)
)

_P, _S, _I, _B = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_bool
_SIGNATURES: dict[str, tuple[Any, tuple[Any, ...]]] = {
    "mosquitto_lib_init": (_I, ()),
    "mosquitto_lib_version": (_I, (ctypes.POINTER(_I), ctypes.POINTER(_I), ctypes.POINTER(_I))),
    "mosquitto_strerror": (_S, (_I,)),
    "mosquitto_connack_string": (_S, (_I,)),
    "mosquitto_new": (_P, (_S, _B, _P)),
    "mosquitto_destroy": (None, (_P,)),
    "mosquitto_threaded_set": (_I, (_P, _B)),
    "mosquitto_int_option": (_I, (_P, _I, _I)),
    "mosquitto_username_pw_set": (_I, (_P, _S, _S)),
    "mosquitto_tls_set": (_I, (_P, _S, _S, _S, _S, _P)),
    "mosquitto_reconnect_delay_set": (_I, (_P, ctypes.c_uint, ctypes.c_uint, _B)),
    "mosquitto_property_add_int32": (_I, (ctypes.POINTER(_P), _I, ctypes.c_uint32)),
    "mosquitto_property_free_all": (None, (ctypes.POINTER(_P),)),
    "mosquitto_connect_bind_v5": (_I, (_P, _S, _I, _I, _S, _P)),
    "mosquitto_reconnect": (_I, (_P,)),
    "mosquitto_disconnect": (_I, (_P,)),
    "mosquitto_subscribe": (_I, (_P, ctypes.POINTER(_I), _S, _I)),
    "mosquitto_unsubscribe": (_I, (_P, ctypes.POINTER(_I), _S)),
    "mosquitto_loop_forever": (_I, (_P, _I, _I)),
    "mosquitto_connect_with_flags_callback_set": (None, (_P, ON_CONNECT)),
    "mosquitto_disconnect_callback_set": (None, (_P, ON_DISCONNECT)),
    "mosquitto_message_callback_set": (None, (_P, ON_MESSAGE)),
    "mosquitto_subscribe_callback_set": (None, (_P, ON_SUBSCRIBE)),
}

_lock = threading.Lock()
_library: Any = None


def load() -> Any:
    """The initialised library, loaded once per process."""
    global _library
    with _lock:
        if _library is not None:
            return _library
        name = ctypes.util.find_library("mosquitto") or "libmosquitto.so.1"
        try:
            lib = ctypes.CDLL(name)
            for function, (restype, argtypes) in _SIGNATURES.items():
                bound = getattr(lib, function)
                bound.restype, bound.argtypes = restype, argtypes
        except (OSError, AttributeError) as exc:
            msg = f"libmosquitto >= 2.0 is not available ({exc}); install it (Debian: apt install libmosquitto1)"
            raise LibraryUnavailable(msg) from exc
        major, minor, revision = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
        lib.mosquitto_lib_version(ctypes.byref(major), ctypes.byref(minor), ctypes.byref(revision))
        if major.value < 2:
            msg = f"libmosquitto {major.value}.{minor.value}.{revision.value} is older than 2.0"
            raise LibraryUnavailable(msg)
        lib.mosquitto_lib_init()
        lib.version = f"{major.value}.{minor.value}.{revision.value}"  # type: ignore[attr-defined]
        _library = lib
        return lib


def error_string(lib: Any, rc: int) -> str:
    text = lib.mosquitto_strerror(rc)
    return text.decode(errors="replace") if text else f"error {rc}"
