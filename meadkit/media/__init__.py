"""Streaming decode/encode of video and audio through PyAV (bundled FFmpeg libraries)."""
