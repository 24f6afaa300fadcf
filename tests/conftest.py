import os
import sys

# The corpus and the crash runner are plain modules beside the tests; the subprocesses
# import them the same way, so references to them by import path resolve in both.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
