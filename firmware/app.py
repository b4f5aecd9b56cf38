# The composition root: builds the board (hal/), the locker (locker/) and the link, and runs them
# in one asyncio main: the ticker, the card reader and reed poll (real boards), the network link
# and, on the simulated board, its control port (hal/sim/control.py). Nothing here waits on the
# network: the link is a task of its own and the locker's decisions never await it. This module
# sits beside main.py, above both hal/ and locker/: nothing in locker/ imports hal/ or drivers/.

import asyncio
import gc

from hal import make_board
from locker import unload
from locker.core import Locker


async def _ticker(locker, board, period_ms):
    while True:
        await asyncio.sleep_ms(period_ms)
        try:
            locker.tick()
            sample = getattr(board, "sample_heap", None)
            if sample is not None:
                sample()
        except Exception as e:  # one bad tick must not stop the time-driven checks
            import sys

            sys.print_exception(e)


async def _reader(locker, board):
    """Real boards: poll the card reader and the reed switches."""
    doors = [board.door(n) for n in range(1, board.nbays + 1)]
    while True:
        uid = board.poll_card()
        if uid is not None:
            locker.tap(uid)
        for n in range(1, board.nbays + 1):
            now = board.door(n)  # a reading as locker.door takes it: no conversion
            if now != doors[n - 1]:
                doors[n - 1] = now
                locker.door(n, now)
        await asyncio.sleep_ms(50)


def load_settings(device):
    """device.json's settings over the defaults; the defaults' module is dropped afterwards."""
    from locker import settings as settings_mod

    settings = settings_mod.load(device)
    unload("locker.settings")
    return settings


async def main(device):
    settings = load_settings(device)
    from locker import link  # loaded now so that the code is counted below

    sim = device.get("board", "sim") == "sim"
    if sim:
        from hal.sim import control

    gc.collect()
    code_bytes = gc.mem_alloc()  # the firmware's own code, which an ESP32 keeps frozen in flash
    board = make_board(device, settings)
    board.code_bytes = code_bytes
    locker = Locker(board, device, settings)
    gc.collect()
    tasks = [asyncio.create_task(_ticker(locker, board, settings["tick_ms"]))]
    if sim:
        port = int((device.get("sim") or {}).get("control_port", 7101))
        await control.serve(locker, board, port)
    else:
        tasks.append(asyncio.create_task(_reader(locker, board)))
    if hasattr(board, "run"):  # real boards: watchdog feed, WiFi, NTP, LED/buzzer patterns
        board.on_clock_set = locker.clock_set
        tasks.append(asyncio.create_task(board.run()))
    if device.get("broker"):
        tasks.append(asyncio.create_task(link.Link(locker, device, settings).run()))
    # Everything has taken what it needs from device.json: its strings (the secret among them)
    # need not stay in RAM for the rest of the day.
    device.clear()
    board.feedback("boot")
    print(
        "locker {} ready: {} bays, config {}".format(
            locker.locker_id, board.nbays, locker.config_version
        )
    )
    while True:
        await asyncio.sleep(3600)


def run(device):
    asyncio.run(main(device))
