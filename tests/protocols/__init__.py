"""Tests of the protocol packages (`sts/protocols/`)."""
