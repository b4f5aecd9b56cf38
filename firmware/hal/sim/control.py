# The simulated board's control port (docs/protocol.md): one line in, one JSON line out.
#
#   tap <UID>                 a card is presented (8 or 14 hex digits)
#   door <BAY> open|close     the bay's reed switch changes (extension: `door <BAY> fail`)
#   clock <UNIX_SECONDS>      sets the real-time clock (UTC)
#   state                     the locker's state
# Extensions for tests and the demo:
#   outputs                   lock outputs, LED and buzzer as the hardware would show them
#   tick                      run the time-driven checks now
#
# Anything else is answered with {"error": "..."}; the connection stays usable. Lines are read in
# bounded chunks, so a peer that never sends a newline cannot exhaust the heap.

import asyncio
import json

from locker import bays as B
from micropython import const

_MAX_LINE = const(128)


def handle(locker, board, line):
    """One request line (str) -> the reply object (the `state` reply comes as JSON already: the
    locker's state buffer, valid until its next state_json()). Never raises for bad input."""
    words = line.split()
    if not words:
        return {"error": "empty line"}
    verb = words[0]
    try:
        if verb == "tap" and len(words) == 2:
            uid = words[1]
            if len(uid) not in (8, 14):
                return {"error": "tap: UID must be 8 or 14 hex digits"}
            return locker.tap_text(uid)
        if verb == "door" and len(words) == 3:
            bay = _int(words[1], "door: bay")
            if not 1 <= bay <= len(locker.bays):
                return {"error": "door: no bay {} (1..{})".format(bay, len(locker.bays))}
            reading = _DOOR_WORDS.get(words[2])
            if reading is None:
                return {"error": "door: expected open, close or fail, not {!r}".format(words[2])}
            board.set_door(bay, reading)
            locker.door(bay, reading)
            return {"ok": True}
        if verb == "clock" and len(words) == 2:
            seconds = _int(words[1], "clock: seconds")
            if seconds < 0 or seconds > 4102444800:
                return {"error": "clock: seconds out of range"}
            board.set_clock(seconds)
            locker.clock_set()
            return {"ok": True}
        if verb == "state" and len(words) == 1:
            state_json = getattr(locker, "state_json", None)  # JSON already: no dict of dicts
            return state_json() if state_json is not None else locker.state()
        if verb == "outputs" and len(words) == 1:
            return board.outputs()
        if verb == "tick" and len(words) == 1:
            locker.tick()
            return {"ok": True}
    except ValueError as e:
        return {"error": str(e)}
    return {"error": "unknown request {!r}: expected tap, door, clock or state".format(line[:40])}


def _handle_safely(locker, board, text):
    try:
        reply = handle(locker, board, text)
        board.sample_heap()
        return reply
    except Exception as e:  # a bug must cost one reply, never the control port
        import sys

        sys.print_exception(e)
        return {"error": "internal error: {}".format(type(e).__name__)}


_DOOR_WORDS = {"open": B.OPEN, "close": B.CLOSED, "closed": B.CLOSED, "fail": B.UNKNOWN}


def _int(text, what):
    try:
        return int(text)
    except ValueError:
        raise ValueError("{}: not a number: {!r}".format(what, text[:20]))


async def _serve_client(locker, board, reader, writer):
    buf = b""
    overlong = False
    try:
        while True:
            chunk = await reader.read(_MAX_LINE)
            if not chunk:
                break
            buf += chunk
            while True:
                nl = buf.find(b"\n")
                if nl < 0:
                    if len(buf) > _MAX_LINE:
                        overlong = True
                        buf = b""
                    break
                line, buf = buf[:nl], buf[nl + 1 :]
                if overlong:
                    overlong = False
                    reply = {"error": "line too long (max {} bytes)".format(_MAX_LINE)}
                else:
                    try:
                        text = line.decode().strip()
                    except UnicodeError:
                        text = None
                    if text is None:
                        reply = {"error": "line is not UTF-8"}
                    else:
                        reply = _handle_safely(locker, board, text)
                if isinstance(reply, bytearray):  # the locker's state buffer: written out now
                    writer.write(reply)
                    writer.write(b"\n")
                else:
                    writer.write(json.dumps(reply).encode() + b"\n")
                reply = None
                await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


async def serve(locker, board, port):
    """Start the control port on 127.0.0.1:port; returns the server."""

    def client(reader, writer):
        return _serve_client(locker, board, reader, writer)

    return await asyncio.start_server(client, "127.0.0.1", port)
