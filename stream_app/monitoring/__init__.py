"""Model monitoring: drift statistics, the live scorecard and the shadow comparison."""
