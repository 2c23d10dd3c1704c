"""Training: the time-ordered split, the hyperparameter study, the candidate model and its evaluation."""
