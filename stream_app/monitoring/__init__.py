"""Model monitoring: drift statistics, the live scorecard (its join logic and the service that feeds
it from the topics) and the shadow comparison."""
