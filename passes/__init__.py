"""Graph passes on ExportedPrograms that make any exported transformer mobile-ready (generic: no VGGT here)."""
