"""The GPV method itself: chunking, parsing into perceptions, scoring, aggregation, validation, training,
elicitation."""
