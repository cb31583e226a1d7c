"""Test helpers: realistic camera cards (:mod:`tests.support.cardgen`) and real processes."""
