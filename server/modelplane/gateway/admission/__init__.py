"""What a request may do before it is routed: per-key rate limits (`limits`), token
accounting (`tokens`), and the scale-from-zero demand signal while it is held
(`demand`)."""
