"""`python -m mergekit_sg` runs the `sgmerge` command."""

from mergekit_sg.cli.app import run

if __name__ == "__main__":
    run()
