"""One thin click command per module: parse options, call the library, print results."""
