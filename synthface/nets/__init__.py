"""Network definitions: face-recognition backbones and the demo world's small nets (torch only)."""
