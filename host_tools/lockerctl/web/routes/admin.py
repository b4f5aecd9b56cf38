"""Site set-up (admins): the timetable (`/admin/timetable`, checked and compiled before it is
stored), the lockers (`/admin/lockers`: add one) and a locker's `device.json`
(`/admin/device.json?locker=ID`, recorded as `device_json`)."""

from __future__ import annotations

import json
import secrets
import time

from fastapi import APIRouter
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ...bounds import MAX_BAYS
from ...store import StoreError
from ..deps import ADMIN_FORM, ADMIN_ONLY, Viewer, ctx
from ..forms import Form
from ..templating import render

router = APIRouter(include_in_schema=False)


# -- timetable ------------------------------------------------------------------------------------


def timetable_page(request: Request, text: str, message: str = "", status: int = 200):
    return render(
        request,
        "timetable.html",
        "Timetable",
        "/admin/timetable",
        status,
        text=text,
        lines=message.split("\n") if message else [],  # one per mistake
    )


@router.get("/admin/timetable")
def timetable_get(request: Request, v: Viewer = ADMIN_ONLY):
    c = ctx(request)
    row = c.store.timetable(c.site)
    return timetable_page(request, row.source if row else "")


@router.post("/admin/timetable")
def timetable_post(request: Request, v: Viewer = ADMIN_ONLY, f: Form = ADMIN_FORM):
    from ...timetable import TimetableError, compile_timetable, parse_timetable

    c = ctx(request)
    text = f.get("toml").replace("\r\n", "\n")
    try:
        parsed = parse_timetable(text, "timetable")
        compile_timetable(parsed, int(time.time()))
    except TimetableError as err:
        return timetable_page(request, text, str(err), 400)
    except (ValueError, KeyError) as err:
        return timetable_page(request, text, f"cannot compile: {err}", 400)
    try:
        version = c.store.set_timetable(c.site, text, parsed, parsed["timezone"], actor=v.actor)
    except StoreError as err:  # e.g. the lockers could not take it: nothing saved
        return timetable_page(request, text, str(err), 400)
    c.flash(
        v.token,
        "ok",
        f"Timetable saved ({parsed['timezone']}); configuration version "
        f"{version} goes to the lockers.",
    )
    return RedirectResponse("/admin/timetable", 303)


# -- lockers --------------------------------------------------------------------------------------


def lockers_admin_page(request: Request, values: dict, message: str = "", status: int = 200):
    c = ctx(request)
    rows = [
        {"r": r, "online": {True: "online", False: "offline", None: "never seen"}[r.online]}
        for r in c.store.lockers(c.site)
    ]
    return render(
        request,
        "lockers_admin.html",
        "Lockers setup",
        "/admin/lockers",
        status,
        rows=rows,
        zone=c.timezone(),
        values=values,
        boards=[("sim", "simulated"), ("esp32", "ESP32")],
        broker=c.broker,
        message=message,
    )


@router.get("/admin/lockers")
def lockers_admin_get(request: Request, v: Viewer = ADMIN_ONLY):
    return lockers_admin_page(request, {})


def add_locker(c, v: Viewer, f: Form) -> str:
    """Registers the locker the form describes; its id. ValueError/StoreError otherwise."""
    from ...keys import new_secret
    from ...sitesettings import default_data_dir, free_control_port
    from ...store import LOCKER_ID_RE

    locker_id = f.get("id").strip()
    if not LOCKER_ID_RE.match(locker_id):
        raise ValueError(f"locker id {locker_id!r}: use 1-28 of A-Z a-z 0-9 . _ -")
    try:
        bays = int(f.get("bays"))
    except ValueError:
        bays = 0
    if not 1 <= bays <= MAX_BAYS:
        raise ValueError(f"bays must be a number 1-{MAX_BAYS}")
    board = f.get("board") or "sim"
    if board not in ("sim", "esp32"):
        raise ValueError("board must be sim or esp32")
    taken = {r.control_port for r in c.store.lockers(c.site) if r.control_port}
    c.store.add_locker(
        c.site,
        locker_id,
        bays,
        new_secret(),
        secrets.token_urlsafe(24),
        board=board,
        control_port=free_control_port(taken),  # as `locker add`: never a demo's or another's
        data_dir=default_data_dir(str(c.store.url), locker_id)
        if board == "sim"
        else f"var/{locker_id}",
        actor=v.actor,
    )
    return locker_id


@router.post("/admin/lockers")
def lockers_admin_post(request: Request, v: Viewer = ADMIN_ONLY, f: Form = ADMIN_FORM):
    c = ctx(request)
    try:
        locker_id = add_locker(c, v, f)
    except (ValueError, StoreError) as err:
        return lockers_admin_page(request, f.values(), str(err), 400)
    c.flash(v.token, "ok", f"Locker {locker_id} added; download its device.json below.")
    return RedirectResponse("/admin/lockers", 303)


@router.get("/admin/device.json")
def device_json(request: Request, v: Viewer = ADMIN_ONLY):
    from ...device import device_json as device_json_of
    from ...sitesettings import device_broker

    c = ctx(request)
    # the address `broker config` recorded for the lockers (with its TLS), else serve's own
    address = device_broker(c.store, c.site) or (*c.broker, False)
    wanted = request.query_params.get("locker", "")
    row = c.store.locker(c.site, wanted)
    if row is None:
        raise HTTPException(404, f"no locker {wanted!r}")
    device = device_json_of(row, c.site, address)
    c.store.record_action(c.site, v.actor, "device_json", {"locker": row.id})
    return Response(
        json.dumps(device, indent=2) + "\n",
        media_type="application/json",
        headers={"content-disposition": f'attachment; filename="device-{row.id}.json"'},
    )
