"""Tests of ums.core: the runner, executors, workspace and the rest of the infrastructure."""
