"""`python -m meadkit` runs the CLI."""
from meadkit.cli import main

main()
