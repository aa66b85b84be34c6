#!/usr/bin/env python
import os
import sys

SIGNS_NOTHING = {"makemigrations", "showmigrations", "sqlmigrate", "check", "help"}


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentops.settings")
    # Commands that read code and schema but sign nothing need no SECRET_KEY.
    if len(sys.argv) > 1 and sys.argv[1] in SIGNS_NOTHING:
        os.environ.setdefault("AGENTOPS_EPHEMERAL_SECRET_KEY", "1")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
