"""Adapters that let other RL engines (TRL, verl) train with the ViRL rewards, data and crop tool."""
