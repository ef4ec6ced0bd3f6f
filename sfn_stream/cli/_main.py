import sys


def main(argv=None):
    print("sfn-stream: not yet implemented", file=sys.stderr)
    return 2
