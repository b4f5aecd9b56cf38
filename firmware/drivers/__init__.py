# Chip drivers for the real locker bank. Each receives its bus (SPI, I2C, Pin) in its constructor
# and never creates hardware itself, so the same code talks to the ESP32's buses and, in the tests,
# to register-level models of the chips.
