"""Tests of the Graph mail emulator, driven over real HTTPS with real MSAL."""
