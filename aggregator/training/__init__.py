"""Global training from accepted statistics only: pooled sufficient statistics in, a linear model out."""
