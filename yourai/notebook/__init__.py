"""Helpers only the notebooks use: live plots, figures, tables and the multi-run experiments behind them."""
