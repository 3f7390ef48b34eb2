"""polydiff.audio plugin (in progress; see the issue tracker)."""
