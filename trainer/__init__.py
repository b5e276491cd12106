"""Fitting forecasters: training loops, presets, device choice, the champion/challenger
guard and the periodic refit schedule."""
