"""polydiff.motion plugin (in progress; see the issue tracker)."""
