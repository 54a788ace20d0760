"""The pipeline and baseline config files shipped with meadkit (package data; their values are the config dataclasses' defaults)."""
