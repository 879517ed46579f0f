"""The training job: corpus → tokenizer → lm → activations → dictionary → evaluation → bundle."""
