"""Image preprocessing, BlendedMVS reading and synthetic scenes."""
