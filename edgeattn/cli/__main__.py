from edgeattn.cli import run

run()
