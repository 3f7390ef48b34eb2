"""polydiff.threed plugin (in progress; see the issue tracker)."""
