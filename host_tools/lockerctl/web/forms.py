"""Reading a request's form, bounded: at most the route's number of bytes (413 past it, counted
while it arrives, chunked or not), MAX_FIELDS fields of a url-encoded form, MAX_PARTS parts of a
multipart one (counted before it is parsed), MAX_FIELD_BYTES per value. Multipart bodies are
parsed by Starlette's parser (python-multipart).

Routes get the form as a FastAPI dependency (`deps.form()`), which runs only after the session,
role and route checks: nothing is read before them.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

# Request bounds (docs/security.md, "HTTP limits").
MAX_BODY = 8 * 1024 * 1024  # a multipart upload (the roster file)
MAX_FORM_BODY = 1024 * 1024  # any other body (url-encoded forms, JSON)
MAX_FIELDS = 100  # fields of a url-encoded form
MAX_PARTS = 50  # parts of a multipart form
MAX_FIELD_BYTES = 256 * 1024  # one form value (not a file)
_BOUNDARY_RE = re.compile(r"[0-9A-Za-z'()+_,./:=? -]{0,69}[0-9A-Za-z'()+_,./:=?-]\Z")


@dataclass
class Form:
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # name -> (file, data)

    def get(self, name: str, default: str = "") -> str:
        return self.fields.get(name, default)

    def __getitem__(self, name: str) -> str:
        return self.fields.get(name, "")

    def values(self) -> dict[str, str]:
        return dict(self.fields)


def _too_large(what: str) -> HTTPException:
    return HTTPException(413, what)


async def read_body(request: Request, limit: int = MAX_FORM_BODY) -> bytes:
    """The body, at most `limit` bytes (HTTPException 413 as soon as it passes)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise _too_large(f"request body too large (at most {limit // 1024} KiB)")
    out = bytearray()
    async for chunk in request.stream():
        out += chunk
        if len(out) > limit:
            raise _too_large(f"request body too large (at most {limit // 1024} KiB)")
    return bytes(out)


async def read_form(request: Request, limit: int = MAX_FORM_BODY) -> Form:
    """The request's form within the bounds above (HTTPException 400/413 otherwise); an empty
    form for another content type."""
    if request.method != "POST":
        return Form()
    content_type = request.headers.get("content-type", "")
    ctype = content_type.split(";", 1)[0].strip().lower()
    body = await read_body(request, limit)
    if ctype == "application/x-www-form-urlencoded":
        return _urlencoded(body)
    if ctype == "multipart/form-data":
        return await _multipart(request, content_type, body)
    return Form()


def _urlencoded(body: bytes) -> Form:
    try:
        pairs = urllib.parse.parse_qsl(
            body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=MAX_FIELDS
        )
    except ValueError:
        raise _too_large(f"too many form fields (at most {MAX_FIELDS})") from None
    if any(len(v) > MAX_FIELD_BYTES for _, v in pairs):
        raise _too_large(f"a form field is longer than {MAX_FIELD_BYTES // 1024} KiB")
    return Form(dict(pairs))


def _boundary(content_type: str) -> str:
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "boundary":
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            if _BOUNDARY_RE.match(value):
                return value
            break
    raise HTTPException(400, "multipart form without a valid boundary")


async def _multipart(request: Request, content_type: str, body: bytes) -> Form:
    boundary = _boundary(content_type)
    # Counted before anything is parsed: the parts are never more than MAX_PARTS.
    if body.count(b"--" + boundary.encode("latin-1")) > MAX_PARTS + 1:
        raise _too_large(f"too many parts in the form (at most {MAX_PARTS})")

    async def stream():
        yield body

    parser = MultiPartParser(
        request.headers,
        stream(),
        max_files=MAX_PARTS,
        max_fields=MAX_PARTS,
        max_part_size=MAX_FIELD_BYTES,
    )
    try:
        data = await parser.parse()
    except MultiPartException as err:
        status = 413 if "maximum size" in err.message else 400
        raise HTTPException(status, f"bad multipart form: {err.message}") from None
    form = Form()
    try:
        for name, value in data.multi_items():
            if isinstance(value, UploadFile):
                form.files[name] = (value.filename or "", await value.read())
            else:
                form.fields[name] = value
    finally:
        await data.close()
    return form
