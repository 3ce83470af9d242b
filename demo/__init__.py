"""The end-to-end demo: a simulated plant, a trained and exported model, a broker and the real agent."""
