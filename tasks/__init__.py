"""The task packages and the engine they share."""
