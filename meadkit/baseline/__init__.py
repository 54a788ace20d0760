"""The MEAD paper's baseline, compact: audio-to-landmarks, emotion/intensity classifiers, neutral-to-emotion
transformer and refinement GAN, trained from shards (`train`), used by `generate` and `evaluate`."""
