"""The card's path: the stages, the pipeline that composes them, and the sources it reads from."""
