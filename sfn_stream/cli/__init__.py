"""The ``sfn-stream`` command."""


def main(argv=None):
    from ._main import main as _main

    return _main(argv)
