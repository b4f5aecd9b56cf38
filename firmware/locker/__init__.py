# classlocker firmware: the locker's logic. Nothing in this package touches hardware; the board
# objects come from hal/.
