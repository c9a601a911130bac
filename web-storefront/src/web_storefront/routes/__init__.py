"""One router per part of the shop."""
