# The simulated board (`board: sim`) for the MicroPython unix port: the board itself (board.py),
# its flash (flash.py: a littlefs image with wear counters, fault injection and a real chip's
# timing) and its control port (control.py: the console tests and the demo drive it through).
