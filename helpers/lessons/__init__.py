"""Lesson code generated from the notebooks' cells marked `#| export NAME` (`make export`)."""
