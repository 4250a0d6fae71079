"""Accuracy metrics as plain functions over arrays and tables: the lowest layer every evaluator and trainer reads."""
