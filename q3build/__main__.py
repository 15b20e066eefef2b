"""`python -m q3build`: the same CLI as the console script, through this interpreter."""
from q3build.cli import entry

entry()
