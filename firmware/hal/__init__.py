# Board support: `sim` (MicroPython unix port, simulated hardware: the hal.sim package) and
# `esp32`.


def make_board(device, settings):
    kind = device.get("board", "sim")
    if kind == "sim":
        from hal.sim.board import Board
    elif kind == "esp32":
        from hal.esp32 import Board
    else:
        raise ValueError("device.json: board must be 'sim' or 'esp32', not {!r}".format(kind))
    return Board(device, settings)
