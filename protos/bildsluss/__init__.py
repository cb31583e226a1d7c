"""Generated wire-protocol modules of Bildsluss (see protos/bildsluss/v1/*.proto)."""
