"""Entry point of `lockerctl`: the group from `clibase` with every area's commands registered."""

import sys

from .clibase import UserError, cli

# Each module registers its commands on `cli` when imported.
_COMMAND_MODULES = [
    "lockerctl.cmd_export",  # export
    "lockerctl.cmd_audit",  # audit verify, audit key
    "lockerctl.cmd_roster",  # roster import/export, card revoke
    "lockerctl.cmd_lockers",  # locker add/list/rekey
    "lockerctl.cmd_timetable",  # timetable set/show
    "lockerctl.cmd_grants",  # grant add/list/revoke
    "lockerctl.cmd_serve",  # serve, open (the MQTT side)
    "lockerctl.cmd_broker",  # broker config
    "lockerctl.cmd_privacy",  # retention apply, sar
    "lockerctl.cmd_sim",  # sim tap/door/state: the simulated lockers' control ports
    "lockerctl.cmd_web",  # user add (dashboard accounts)
    "lockerctl.cmd_ops",  # backup, restore
    "lockerctl.cmd_setup",  # setup (running it as services)
    "lockerctl.cmd_fleet",  # firmware publish, firmware status (over-the-air updates)
    "lockerctl.cmd_exceptions",  # release, consent, exemption, visitor, card unrevoke
    "lockerctl.cmd_report",  # report (the policy report)
]


def _load_commands() -> None:
    import importlib

    for name in _COMMAND_MODULES:
        importlib.import_module(name)


def main(argv=None) -> int:
    _load_commands()
    try:
        return cli.main(args=argv, prog_name="lockerctl", standalone_mode=True)
    except UserError as e:  # raised outside click's own handling (e.g. in a callback)
        e.show()
        return 1


if __name__ == "__main__":
    sys.exit(main())
