"""Code both programs share (the agent and the archive), kept deliberately small."""
