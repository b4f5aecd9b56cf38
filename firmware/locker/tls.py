# TLS to the broker (device.json `broker.tls`), kept out of locker.link so that a locker on a
# plain connection never loads it.


def context(broker):
    """TLS to the broker. With `ca` (the site CA's certificate, PEM, on the board; a relative path
    is looked up in the working directory, then next to $LOCKER_DEVICE) the broker's certificate
    and name are verified; without, the link is encrypted but the broker is not authenticated."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca = broker.get("ca")
    if not ca:
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    try:
        with open(_ca_path(ca), "rb") as f:
            data = f.read()
        for der in _der_certs(data):
            ctx.load_verify_locations(cadata=der)
    except (OSError, ValueError) as e:
        raise ValueError("device.json: broker.ca: cannot use {!r} ({})".format(ca, e)) from None
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _ca_path(ca):
    if ca.startswith("/"):
        return ca
    try:
        import os

        open(ca).close()
        return ca
    except OSError:
        device = getattr(os, "getenv", lambda k: None)("LOCKER_DEVICE") or ""
        if "/" in device:
            return device.rsplit("/", 1)[0] + "/" + ca
        return ca


def _der_certs(data):
    """The certificates of a PEM file as DER (MicroPython's mbedTLS binding parses only DER from
    memory); DER data is passed through."""
    if b"-----BEGIN" not in data:
        return [data]
    from binascii import a2b_base64

    out = []
    body = None
    for line in data.split(b"\n"):
        line = line.strip()
        if line.startswith(b"-----BEGIN CERTIFICATE"):
            body = []
        elif line.startswith(b"-----END CERTIFICATE") and body is not None:
            out.append(a2b_base64(b"".join(body)))
            body = None
        elif body is not None:
            body.append(line)
    if not out:
        raise ValueError("no certificate in it")
    return out
