"""Where things are, for tests that start processes: SUPPORT (this folder: the flows and
helpers the tests and their subprocesses import) and ROOT (the repository)."""
import os

SUPPORT = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(SUPPORT))
