"""Canary rollouts: the pure planner (`plan`), the measuring of each step (`analysis`),
and the store through which measurements reach the reconciler (`store`)."""
