"""Code both programs share (the agent and the archive), kept deliberately small."""

# The one version of both programs (pyproject.toml reads it; --version and the start log say it).
__version__ = "0.1.0"
