"""Statistics of a region that disagree with the other regions beyond noise and heterogeneity are held back."""
