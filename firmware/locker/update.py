# Over-the-air firmware updates at the locker (docs/fleet.md; the formats in docs/protocol.md,
# `firmware`). Loaded only while an offer is handled, a slot is on trial or a failed update is
# to be reported.
#
# The host's signed offer (retained on lockers/<site>/<id>/firmware) names the files of a build
# with their sizes and SHA-256. The locker pulls the files one chunk at a time (it subscribes to
# one retained chunk topic, firmware/<site>/<file id>/<n>, takes the message, unsubscribes, and
# asks for the next), appends each chunk to the file in the spare slot (fw/a or fw/b) and hashes
# it on the way; a file is checked against the manifest when its last chunk is in. When every
# file checks, the locker switches at the first moment no bay is in the middle of a deposit or
# retrieval: it journals `updated`, marks the slot "on trial" in the boot record and resets. The
# boot loader (main.py) runs the trial slot once; the new firmware confirms itself when it is
# online (confirm). After a reset or a lost connection the locker resumes from what is on flash.
import hashlib
import json
import os
from binascii import hexlify, unhexlify

from locker import bays as B
from locker import const, makedirs
from locker.bays import ticks_diff
from locker.mac import HMAC, equal

_MAX_OFFER = const(8192)  # an offer longer than this is refused unread (too_large)
_MAX_FILES = const(128)
_MAX_FILE = const(262144)
_MAX_NAME = const(96)
_RETRY_MS = const(20000)  # a chunk asked for and not received: ask again
_BUF = const(512)
_SPARE = const(8192)  # flash kept free beside the journal's own room (bytes)
_BOOT_LOADER = const(
    ("main.py", "bootloader.py", "bootloader.mpy", "bootrecord.py", "bootrecord.mpy")
)  # never replaced over the air
_NAME_OK = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"


class Refused(Exception):
    """An offer or a file refused; args[0] is the `update_rejected` reason."""


def version_key(text):
    """A version's dotted integers as a tuple without trailing zeros ("1.2" == "1.2.0");
    ValueError for anything else (1 to 4 parts of 1 to 9 digits)."""
    if not isinstance(text, str):
        raise ValueError("version")
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        raise ValueError("version")
    out = []
    for p in parts:
        if not 1 <= len(p) <= 9:
            raise ValueError("version")
        for c in p:
            if c not in "0123456789":
                raise ValueError("version")
        out.append(int(p))
    while len(out) > 1 and out[-1] == 0:
        out.pop()
    return tuple(out)


def newer(a, b):
    """True when version text `a` is above version text `b` (dotted integers)."""
    return version_key(a) > version_key(b)


def _check_name(name):
    if not isinstance(name, str) or not 1 <= len(name) <= _MAX_NAME or name in _BOOT_LOADER:
        raise Refused("malformed")
    for part in name.split("/"):
        if not part or part[0] == "." or part == "__pycache__":
            raise Refused("malformed")
        for c in part.encode():
            if c not in _NAME_OK:
                raise Refused("malformed")


def check_offer(payload, key, locker_id):
    """The manifest of a genuine offer for this locker, or Refused(reason)."""
    if len(payload) < 66 or payload[64] != 10:
        raise Refused("malformed")
    try:
        tag = unhexlify(bytes(payload[:64]))
    except ValueError:
        raise Refused("malformed") from None
    h = HMAC(key)
    body = memoryview(payload)[65:]
    h.update(body)
    if not equal(h.digest(), tag):
        raise Refused("bad_signature")
    try:
        m = json.loads(bytes(body))
    except (ValueError, UnicodeError):
        raise Refused("malformed") from None
    if not isinstance(m, dict) or not isinstance(m.get("locker"), str):
        raise Refused("malformed")
    try:
        version_key(m.get("version"))
    except ValueError:
        raise Refused("malformed") from None
    chunk = m.get("chunk")
    files = m.get("files")
    if type(chunk) is not int or not 256 <= chunk <= 2048:  # noqa: E721
        raise Refused("malformed")
    if not isinstance(files, list) or not 1 <= len(files) <= _MAX_FILES:
        raise Refused("malformed")
    seen = set()
    for f in files:
        if not isinstance(f, list) or len(f) != 3:
            raise Refused("malformed")
        name, size, sha = f
        _check_name(name)
        if type(size) is not int or not 0 <= size <= _MAX_FILE:  # noqa: E721
            raise Refused("malformed")
        if not isinstance(sha, str) or len(sha) != 64 or name in seen:
            raise Refused("malformed")
        try:
            unhexlify(sha)
        except ValueError:
            raise Refused("malformed") from None
        seen.add(name)
    if "VERSION" not in seen:
        raise Refused("malformed")
    if m["locker"] != locker_id:
        raise Refused("wrong_locker")
    return m


# -- the boot record (fw/boot.json; main.py reads it) -----------------------------------------


def read_record(fwdir):
    try:
        with open(fwdir + "/boot.json") as f:
            rec = json.load(f)
        return rec if isinstance(rec, dict) else {}
    except (OSError, ValueError):
        return {}


def write_record(fwdir, rec):
    path = fwdir + "/boot.json"
    with open(path + ".tmp", "w") as f:
        json.dump(rec, f)
    os.rename(path + ".tmp", path)


def at_boot(locker):
    """A trial that failed before this boot is journaled (`update_failed`) once."""
    boot = locker.boot
    if boot.get("failed") and not boot.get("told", True):
        locker._record("update_failed", locker.board.now(), reason=boot["failed"])
        locker._commit()
        rec = read_record(boot["fwdir"])
        rec["told"] = True
        write_record(boot["fwdir"], rec)
        boot["told"] = True


def confirm(locker):
    """The slot on trial came online: it is the firmware from now on."""
    boot = locker.boot
    fwdir = boot["fwdir"]
    rec = read_record(fwdir)
    trial = rec.get("trial") or {}
    rec["previous"] = rec.get("active")
    rec["active"] = trial.get("slot", boot.get("slot"))
    rec["trial"] = None
    rec["failed"] = None
    rec["told"] = True
    write_record(fwdir, rec)
    boot["confirmed"] = True
    boot["trial"] = False
    boot["failed"] = None
    locker.state_rev += 1
    print("update: firmware {} confirmed".format(locker.version))


# -- flash helpers ------------------------------------------------------------------------------


def _size(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def _wipe(path):
    """Removes directory `path` and everything in it."""
    try:
        entries = list(os.ilistdir(path))
    except OSError:
        return
    for e in entries:
        p = path + "/" + e[0]
        if e[1] == 0x4000:
            _wipe(p)
        else:
            _remove(p)
    try:
        os.rmdir(path)
    except OSError:
        pass


def _hash_into(h, path, n, buf):
    """Feeds the first n bytes of file `path` to hash h."""
    mv = memoryview(buf)
    with open(path, "rb") as f:
        while n:
            k = f.readinto(mv[: min(n, len(buf))])
            if not k:
                raise OSError(5)
            h.update(mv[:k])
            n -= k


# -- the updater --------------------------------------------------------------------------------


class Updater:
    def __init__(self, locker):
        self.locker = locker
        self.fwdir = locker.boot.get("fwdir") or locker.dir + "/fw"
        makedirs(self.fwdir)
        self.site = locker.site
        self.offer_id = None  # the offer handled (first 8 bytes of its SHA-256, hex)
        self.m = None  # the manifest being fetched
        self.slot = None
        self.i = self.off = 0  # the file being fetched and how much of it is on flash
        self.h = None  # its SHA-256 so far
        self.done = self.total = 0  # bytes checked on flash, bytes in all
        self.ready = False
        self.asked = None  # the chunk topic subscribed to (bytes), None when none
        self.asked_ms = 0
        self.got = False
        self.conn = None  # the link's connection count when asked
        self.buf = None
        self.n = 0
        self.told = -1  # progress (tenths) last put in the state
        self.wake = None

    # -- offers -----------------------------------------------------------------------------

    def offer(self, payload):
        oid = hexlify(hashlib.sha256(payload).digest()[:8]).decode()
        if oid == self.offer_id:
            return  # the retained offer again (a reconnect): nothing new
        locker = self.locker
        try:
            m = check_offer(payload, locker.fw_key, locker.locker_id)
            v = m["version"]
            if locker.boot.get("trial"):
                return  # this firmware is on trial itself: offers wait for its confirmation
            if version_key(v) == version_key(locker.version):
                self.offer_id = oid
                return  # what runs
            if not newer(v, locker.version):
                raise Refused("downgrade")
            if v == locker.boot.get("failed"):
                self.offer_id = oid
                return  # it failed here already (update_failed was journaled)
        except Refused as e:
            self.offer_id = oid
            self._refuse(e.args[0], oid)
            return
        self.offer_id = oid
        self._start(m, payload)

    def _refuse(self, reason, oid):
        """Journals update_rejected once per offer (a retained offer comes again on every
        reconnect and after every restart)."""
        path = self.fwdir + "/refused"
        try:
            with open(path) as f:
                if f.read() == oid:
                    return
        except OSError:
            pass
        locker = self.locker
        locker._record("update_rejected", locker.board.now(), reason=reason)
        locker._commit()
        with open(path, "w") as f:
            f.write(oid)
        print("update: offer refused ({})".format(reason))

    def _start(self, m, payload):
        rec = read_record(self.fwdir)
        slot = "b" if rec.get("active") == "a" else "a"
        sdir = self.fwdir + "/" + slot
        try:
            with open(sdir + "/OFFER", "rb") as f:
                held = f.read()
        except OSError:
            held = None
        if held != bytes(payload):  # another offer's files, or none: the slot starts empty
            _wipe(sdir)
            makedirs(sdir)
            with open(sdir + "/OFFER", "wb") as f:
                f.write(payload)
        held = None
        self.m, self.slot = m, slot
        self.ready = False
        self.total = sum(f[1] for f in m["files"])
        self._scan()
        if self.m is None:
            return
        # room: what is still to come, beside what the journal may still grow into
        try:
            st = os.statvfs(self.fwdir)
            free = st[0] * st[3]
            j = self.locker.journal
            need = self.total - self.done + (j.capacity - j.used_bytes) // 2 + _SPARE
            if free < need:
                self._fail("no_room")
                return
        except (OSError, AttributeError):
            pass
        self.locker.state_rev += 1
        print(
            "update: firmware {} offered into slot {} ({} of {} bytes on flash)".format(
                m["version"], slot, self.done, self.total
            )
        )

    def _scan(self):
        """Where to resume: every file already whole and checked counts, the first that is not
        goes on from its last whole chunk (hashed again from flash)."""
        m = self.m
        sdir = self.fwdir + "/" + self.slot
        chunk = m["chunk"]
        buf = bytearray(_BUF)
        self.done = 0
        files = m["files"]
        for i in range(len(files)):
            name, size, sha = files[i]
            path = sdir + "/" + name
            have = _size(path)
            h = hashlib.sha256()
            try:
                if have == size:
                    _hash_into(h, path, size, buf)
                    if hexlify(h.digest()).decode() == sha:
                        self.done += size
                        continue
                    h = hashlib.sha256()
                    have = -1
                elif 0 < have < size and have % chunk == 0:
                    _hash_into(h, path, have, buf)
                else:
                    have = -1
            except OSError:
                h, have = hashlib.sha256(), -1
            if have < 0:
                _remove(path)
                have = 0
            if "/" in name:
                makedirs(sdir + "/" + name.rsplit("/", 1)[0])
            self.i, self.off, self.h = i, have, h
            self.done += have
            if size == 0:
                self._file_done()
            return
        self.i = len(files)
        self._complete()

    def _file_done(self):
        """The current file is whole: check it, then on to the next (empty files at once)."""
        name, size, sha = self.m["files"][self.i]
        if hexlify(self.h.digest()).decode() != sha:
            self._fail("bad_hash")
            return
        files = self.m["files"]
        sdir = self.fwdir + "/" + self.slot
        self.i += 1
        self.off = 0
        self.h = hashlib.sha256()
        while self.i < len(files) and files[self.i][1] == 0:
            name = files[self.i][0]
            if "/" in name:
                makedirs(sdir + "/" + name.rsplit("/", 1)[0])
            with open(sdir + "/" + name, "wb"):
                pass
            if files[self.i][2] != hexlify(hashlib.sha256().digest()).decode():
                self._fail("bad_hash")
                return
            self.i += 1
        if self.i >= len(files):
            self._complete()
        elif "/" in files[self.i][0]:
            makedirs(sdir + "/" + files[self.i][0].rsplit("/", 1)[0])

    def _complete(self):
        try:
            with open(self.fwdir + "/" + self.slot + "/VERSION") as f:
                ok = f.read().strip() == self.m["version"]
        except OSError:
            ok = False
        if not ok:
            self._fail("malformed")
            return
        self.ready = True
        self.done = self.total
        self.locker.state_rev += 1
        print("update: firmware {} checked in slot {}".format(self.m["version"], self.slot))

    def _fail(self, reason):
        if self.slot is not None:
            _wipe(self.fwdir + "/" + self.slot)
        self.m = None
        self.ready = False
        self._refuse(reason, self.offer_id or "")
        self.locker.state_rev += 1

    # -- chunks -----------------------------------------------------------------------------

    def _topic(self):
        name, size, sha = self.m["files"][self.i]
        return "firmware/{}/{}/{}".format(self.site, sha[:32], self.off // self.m["chunk"])

    async def pump(self, client, connects):
        """One step of the download, from the link's loop: asks for the next chunk when the last
        one is in, asks again when one did not come."""
        if self.conn != connects:  # a new connection: its subscriptions start empty
            self.conn = connects
            self.asked = None
            self.got = False
        now = self.locker.board.ticks_ms()
        if self.asked is not None and (
            self.got or self.m is None or ticks_diff(now, self.asked_ms) > _RETRY_MS
        ):
            t, self.asked, self.got = self.asked, None, False
            await client.unsubscribe(t)
        if self.asked is None and self.m is not None and not self.ready:
            t = self._topic().encode()
            self.asked, self.asked_ms = t, now
            await client.subscribe(t, 1)

    def chunk_sink(self, topic, length):
        if self.m is None or self.ready or self.got or topic != self.asked:
            return None
        chunk = self.m["chunk"]
        size = self.m["files"][self.i][1]
        if length != min(chunk, size - self.off):
            self.got = True
            self._fail("bad_hash")
            return None
        if self.buf is None:
            self.buf = bytearray(chunk)
        self.n = 0
        return self

    def write(self, data):
        n = self.n + len(data)
        if n <= len(self.buf):
            self.buf[self.n : n] = data
        self.n = n

    def abort(self):
        self.n = 0  # nothing reached the flash; asked again after a reconnect

    def close(self):
        if self.m is None or self.n > len(self.buf):
            return
        data = memoryview(self.buf)[: self.n]
        name = self.m["files"][self.i][0]
        try:
            with open(self.fwdir + "/" + self.slot + "/" + name, "ab") as f:
                f.write(data)
        except OSError:
            self.got = True
            self._fail("no_room")
            return
        self.h.update(data)
        self.off += self.n
        self.done += self.n
        self.got = True
        if self.off >= self.m["files"][self.i][1]:
            self._file_done()
        tenth = self.done * 10 // (self.total or 1)
        if tenth != self.told:
            self.told = tenth
            self.locker.state_rev += 1
        if self.wake is not None:
            self.wake()

    # -- the switch -------------------------------------------------------------------------

    def tick(self):
        if not self.ready:
            return
        locker = self.locker
        if locker.override_by is not None:
            return
        for bay in locker.bays:
            if bay.state not in (B.FREE, B.OCCUPIED) or bay.door != B.CLOSED:
                return  # mid-transaction: the switch waits
        v = self.m["version"]
        locker._record("updated", locker.board.now(), reason=v)
        locker._commit()
        rec = read_record(self.fwdir)
        rec["trial"] = {"slot": self.slot, "version": v}
        rec["cause"] = "update"
        write_record(self.fwdir, rec)
        print("update: switching to {} (slot {})".format(v, self.slot))
        reset = locker.boot.get("reset")
        if reset is None:
            import machine

            reset = machine.reset
        reset()

    def view(self):
        m = self.m
        return (
            m["version"] if m else None,
            (int(self.done * 100 // (self.total or 1)) / 100) if m else None,
        )


class OfferSink:
    """Gathers an offer (at most _MAX_OFFER bytes) for Updater.offer."""

    def __init__(self, updater, length):
        self.updater = updater
        self.buf = bytearray(length)
        self.n = 0

    def write(self, data):
        n = self.n + len(data)
        if n <= len(self.buf):
            self.buf[self.n : n] = data
        self.n = n

    def close(self):
        if self.n == len(self.buf):
            self.updater.offer(self.buf)
        self.buf = None

    def abort(self):
        self.buf = None


def offer_sink(locker, length):
    """A sink for an incoming offer of `length` bytes (None: nothing to read)."""
    if length == 0:
        return None  # a cleared retained offer
    if locker.updater is None:
        locker.updater = Updater(locker)
    if length > _MAX_OFFER:
        locker.updater._refuse("too_large", "len{}".format(length))
        return None
    return OfferSink(locker.updater, length)
