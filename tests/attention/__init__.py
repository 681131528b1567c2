"""Tests of taskcam.attention, one file per module."""
