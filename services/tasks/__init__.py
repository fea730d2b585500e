"""ACR Tasks: runs (quick builds), their scheduling and the runner that executes them."""
