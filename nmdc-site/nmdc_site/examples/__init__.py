"""Small commands that `nmdc-site run` can execute, shipped for the demo and the tests."""
